"""DocumentService on a real MongoDB-protocol server: Extended JSON, CRUD, streams, indexes."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from bson import Binary, Decimal128, Int64, ObjectId, json_util
from bson.binary import UuidRepresentation
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from paca.db.v1 import document_service_pb2 as pb
from paca.db.v1 import document_service_pb2_grpc as pb_grpc
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from db_service.app import DbApp
from db_service.document.config import MongoDatabaseSettings, mongo_database
from db_service.settings import DatabaseSettings, DbSettings
from paca_runtime import semconv
from tests.integration.conftest import runtime_settings
from tests.integration.test_api_call import field_violations
from tests.integration.test_tracing_http_rpc import everything_recorded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# What a client sends: canonical Extended JSON, UUIDs as the standard subtype 4.
CANONICAL = json_util.CANONICAL_JSON_OPTIONS.with_options(
    uuid_representation=UuidRepresentation.STANDARD
)


def database_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


@dataclass
class Mongo:
    """A db_service with one MongoDB database ("docs") on a fresh server database."""

    app: DbApp
    stub: pb_grpc.DocumentServiceStub
    # The same database through pymongo directly, to check what was really stored.
    raw: AsyncDatabase[dict[str, Any]]


@asynccontextmanager
async def serve(
    tmp_path: Path, *mongo: MongoDatabaseSettings, **settings: Any
) -> AsyncIterator[tuple[DbApp, pb_grpc.DocumentServiceStub]]:
    """A db_service (SQLite main + these MongoDB databases) and a DocumentService stub."""
    app = DbApp(
        DbSettings(
            listen="127.0.0.1:0",
            databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
            pool_size=2,
            mongo=mongo,
            **settings,
        ),
        runtime_settings(tmp_path),
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            yield app, pb_grpc.DocumentServiceStub(channel)
    finally:
        await app.stop()


@pytest.fixture
async def m(mongodb_url: str, tmp_path: Path) -> AsyncIterator[Mongo]:
    name = f"paca_it_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True, uuidRepresentation="standard"
    )
    try:
        url = database_url(mongodb_url, name)
        async with serve(tmp_path, mongo_database("docs", url, pool_size=2)) as (app, stub):
            yield Mongo(app, stub, client[name])
    finally:
        await client.drop_database(name)
        await client.close()


def ejson(value: object) -> str:
    return json_util.dumps(value, json_options=CANONICAL)


async def insert(m: Mongo, collection: str, *documents: object) -> list[str]:
    reply = await m.stub.InsertDocuments(
        pb.InsertDocumentsRequest(collection=collection, documents=[ejson(d) for d in documents])
    )
    return list(reply.inserted_ids)


async def find(m: Mongo, collection: str, **fields: object) -> list[dict[str, object]]:
    documents = []
    async for batch in m.stub.FindDocuments(
        pb.FindDocumentsRequest(collection=collection, **fields)  # type: ignore[arg-type]
    ):
        documents += [json.loads(d) for d in batch.documents]
    return documents


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def engine_code(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.metadata["code"])
    return ""


async def test_mongo_extended_json_round_trip_keeps_every_bson_type(m: Mongo) -> None:
    oid = ObjectId()
    document = {
        "_id": oid,
        "when": dt.datetime(2024, 2, 29, 12, 30, 45, 123000, tzinfo=dt.UTC),
        "price": Decimal128("1234.5600"),
        "blob": Binary(b"\x00\x01\xfe\xff", 0),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "small": 7,
        "big": Int64(1 << 40),
        "ratio": 0.25,
        "nested": {"list": [1, "two", {"three": Decimal128("3.0")}], "none": None, "ok": True},
    }
    text = ejson(document)
    ids = await m.stub.InsertDocuments(pb.InsertDocumentsRequest(collection="c", documents=[text]))
    assert list(ids.inserted_ids) == [ejson(oid)]

    # Stored as the real BSON types, not as strings.
    stored = await m.raw.c.find_one({"_id": oid})
    assert stored is not None
    assert isinstance(stored["price"], Decimal128)
    assert isinstance(stored["big"], Int64)
    assert stored["when"] == document["when"]

    reply = await m.stub.FindOneDocument(
        pb.FindOneDocumentRequest(collection="c", filter=ejson({"_id": oid}))
    )
    assert reply.found
    # Canonical out: exactly what went in, types and key order included.
    assert json.loads(reply.document) == json.loads(text)
    assert json_util.loads(reply.document) == json_util.loads(text)
    assert '"$numberDecimal": "1234.5600"' in reply.document
    assert '"big": {"$numberLong": "1099511627776"}' in reply.document

    # Relaxed input is accepted and comes back canonical.
    await m.stub.InsertDocuments(
        pb.InsertDocumentsRequest(
            collection="c", documents=['{"_id": 2, "d": {"$date": "2030-01-01T00:00:00Z"}}']
        )
    )
    relaxed = await m.stub.FindOneDocument(
        pb.FindOneDocumentRequest(collection="c", filter='{"_id": 2}')
    )
    assert json.loads(relaxed.document) == {
        "_id": {"$numberInt": "2"},
        "d": {
            "$date": {
                "$numberLong": str(int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp() * 1000))
            }
        },
    }
    missing = await m.stub.FindOneDocument(
        pb.FindOneDocumentRequest(collection="c", filter='{"_id": 3}')
    )
    assert not missing.found
    assert missing.document == ""


async def test_mongo_find_filters_projects_sorts_limits_and_skips(m: Mongo) -> None:
    await insert(
        m, "people", *({"_id": i, "age": 20 + i % 5, "name": f"p{i}", "x": i} for i in range(20))
    )
    found = await find(
        m,
        "people",
        filter='{"age": {"$gte": 22}}',
        projection='{"name": 1, "age": 1, "_id": 0}',
        sort='{"age": -1, "name": 1}',
        skip=1,
        limit=4,
    )
    assert found == [
        {"name": n, "age": {"$numberInt": str(a)}}
        for n, a in [("p19", 24), ("p4", 24), ("p9", 24), ("p13", 23)]
    ]
    assert len(await find(m, "people")) == 20
    assert await find(m, "nothing_here") == []


async def test_mongo_find_streams_20k_documents_in_bounded_batches(m: Mongo) -> None:
    payload = "x" * 40
    for start in (0, 10_000):
        await insert(m, "big", *({"_id": i, "p": payload} for i in range(start, start + 10_000)))
    started = time.perf_counter()
    sizes = []
    seen = []
    done = []
    async for batch in m.stub.FindDocuments(
        pb.FindDocumentsRequest(collection="big", sort='{"_id": 1}', batch_size=1500)
    ):
        sizes.append(len(batch.documents))
        seen += [json.loads(d)["_id"]["$numberInt"] for d in batch.documents]
        done.append(batch.done)
    elapsed = time.perf_counter() - started
    assert seen == [str(i) for i in range(20_000)]
    assert max(sizes) == 1500
    assert done[-1]
    assert not any(done[:-1])
    # A byte budget cuts batches too: each document is ~70 bytes of Extended JSON.
    by_bytes = [
        len(b.documents)
        async for b in m.stub.FindDocuments(
            pb.FindDocumentsRequest(collection="big", limit=1000, batch_bytes=7_000)
        )
    ]
    assert sum(by_bytes) == 1000
    assert max(by_bytes) < 110
    print(f"streamed 20000 documents in {len(sizes)} batches in {elapsed:.2f}s")


async def test_mongo_update_one_many_upsert_and_replace(m: Mongo) -> None:
    await insert(m, "c", *({"_id": i, "n": i, "tag": "a" if i < 3 else "b"} for i in range(5)))
    one = await m.stub.UpdateDocuments(
        pb.UpdateDocumentsRequest(
            collection="c", filter='{"tag": "a"}', update='{"$set": {"seen": true}}'
        )
    )
    assert (one.matched_count, one.modified_count, one.upserted_id) == (1, 1, "")
    many = await m.stub.UpdateDocuments(
        pb.UpdateDocumentsRequest(
            collection="c", filter='{"tag": "a"}', update='{"$inc": {"n": 10}}', multi=True
        )
    )
    assert (many.matched_count, many.modified_count) == (3, 3)
    assert sorted(d["n"] for d in await m.raw.c.find({"tag": "a"}).to_list()) == [10, 11, 12]

    upsert = await m.stub.UpdateDocuments(
        pb.UpdateDocumentsRequest(
            collection="c", filter='{"_id": 99}', update='{"$set": {"tag": "new"}}', upsert=True
        )
    )
    assert upsert.matched_count == 0
    assert json.loads(upsert.upserted_id) == {"$numberInt": "99"}
    assert await m.raw.c.find_one({"_id": 99}) == {"_id": 99, "tag": "new"}

    replaced = await m.stub.UpdateDocuments(
        pb.UpdateDocumentsRequest(collection="c", filter='{"_id": 4}', replacement='{"only": 1}')
    )
    assert replaced.modified_count == 1
    assert await m.raw.c.find_one({"_id": 4}) == {"_id": 4, "only": 1}

    everything = pb.UpdateDocumentsRequest(collection="c", update='{"$set": {"z": 1}}', multi=True)
    error = await failure(m.stub.UpdateDocuments(everything))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["filter"]
    everything.all_documents = True
    assert (await m.stub.UpdateDocuments(everything)).matched_count == 6


async def test_mongo_delete_one_and_many(m: Mongo) -> None:
    await insert(m, "c", *({"_id": i, "odd": i % 2} for i in range(6)))
    one = await m.stub.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection="c", filter='{"odd": 1}')
    )
    assert one.deleted_count == 1
    many = await m.stub.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection="c", filter='{"odd": 1}', multi=True)
    )
    assert many.deleted_count == 2
    error = await failure(
        m.stub.DeleteDocuments(pb.DeleteDocumentsRequest(collection="c", multi=True))
    )
    assert field_violations(error) == ["filter"]
    assert await m.raw.c.count_documents({}) == 3
    rest = await m.stub.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection="c", multi=True, all_documents=True)
    )
    assert rest.deleted_count == 3


async def test_mongo_aggregate_match_group_sort_streams_results(m: Mongo) -> None:
    await insert(
        m,
        "sales",
        *(
            {"shop": f"s{i % 3}", "amount": Decimal128(f"{i}.50"), "qty": i, "ok": i % 4 != 0}
            for i in range(30)
        ),
    )
    pipeline = [
        {"$match": {"ok": True}},
        {"$group": {"_id": "$shop", "qty": {"$sum": "$qty"}, "n": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    batches = [
        b
        async for b in m.stub.AggregateDocuments(
            pb.AggregateDocumentsRequest(collection="sales", pipeline=ejson(pipeline), batch_size=2)
        )
    ]
    rows = [json_util.loads(d) for b in batches for d in b.documents]
    expected: dict[str, tuple[int, int]] = {}
    for i in range(30):
        if i % 4:
            total, n = expected.get(f"s{i % 3}", (0, 0))
            expected[f"s{i % 3}"] = (total + i, n + 1)
    assert [(r["_id"], r["qty"], r["n"]) for r in rows] == [
        (k, *expected[k]) for k in sorted(expected)
    ]
    assert [len(b.documents) for b in batches] == [2, 1]
    # A pipeline ending in $out writes its output to another collection and streams nothing.
    out = [*pipeline, {"$out": "totals"}]
    request = pb.AggregateDocumentsRequest(collection="sales", pipeline=ejson(out))
    assert [list(b.documents) async for b in m.stub.AggregateDocuments(request)] == [[]]
    assert await m.raw.totals.count_documents({}) == 3
    assert batches[-1].done


async def test_mongo_count_with_filter_limit_and_skip(m: Mongo) -> None:
    await insert(m, "c", *({"_id": i, "even": i % 2 == 0} for i in range(11)))
    count = m.stub.CountDocuments
    assert (await count(pb.CountDocumentsRequest(collection="c"))).count == 11
    assert (
        await count(pb.CountDocumentsRequest(collection="c", filter='{"even": true}'))
    ).count == 6
    assert (
        await count(
            pb.CountDocumentsRequest(collection="c", filter='{"even": true}', skip=2, limit=3)
        )
    ).count == 3
    assert (await count(pb.CountDocumentsRequest(collection="none"))).count == 0


async def test_mongo_unique_index_refuses_duplicates_and_indexes_are_managed(m: Mongo) -> None:
    created = await m.stub.CreateIndex(
        pb.CreateIndexRequest(collection="users", keys='{"email": 1}', unique=True)
    )
    assert created.name == "email_1"
    ttl = await m.stub.CreateIndex(
        pb.CreateIndexRequest(
            collection="users",
            keys='{"seen": -1}',
            name="seen_ttl",
            expire_after=duration_pb2.Duration(seconds=3600),
        )
    )
    assert ttl.name == "seen_ttl"
    listed = {
        i.name: i
        for i in (await m.stub.ListIndexes(pb.ListIndexesRequest(collection="users"))).indexes
    }
    assert set(listed) == {"_id_", "email_1", "seen_ttl"}
    assert listed["email_1"].unique
    assert json.loads(listed["email_1"].keys) == {"email": {"$numberInt": "1"}}
    assert listed["seen_ttl"].expire_after.seconds == 3600

    await insert(m, "users", {"_id": 1, "email": "a@example.com"})
    error = await failure(insert(m, "users", {"_id": 2, "email": "a@example.com"}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert engine_code(error) == "11000"
    # Ordered insert of many: stops at the duplicate, names it, keeps those before it.
    error = await failure(
        insert(
            m,
            "users",
            {"_id": 3, "email": "b@x"},
            {"_id": 4, "email": "a@example.com"},
            {"_id": 5, "email": "c@x"},
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "documents[1]" in (error.details() or "")
    assert sorted(d["_id"] for d in await m.raw.users.find().to_list()) == [1, 3]

    await m.stub.DropIndex(pb.DropIndexRequest(collection="users", name="email_1"))
    await insert(m, "users", {"_id": 6, "email": "a@example.com"})
    error = await failure(m.stub.DropIndex(pb.DropIndexRequest(collection="users", name="email_1")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await failure(m.stub.DropIndex(pb.DropIndexRequest(collection="users", name="_id_")))
    assert field_violations(error) == ["name"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.FindOneDocumentRequest(collection="c", filter="{not json"), "filter"),
        (pb.FindOneDocumentRequest(collection="c", filter="[1, 2]"), "filter"),
        (pb.FindOneDocumentRequest(collection="c", filter='{"a": {"$bogus": 1}}'), "filter"),
        (pb.FindOneDocumentRequest(collection="c", sort='{"a": 2}'), "sort.a"),
        (pb.FindOneDocumentRequest(collection="c", filter='{"_id": {"$oid": "nope"}}'), "filter"),
        (pb.FindOneDocumentRequest(collection="$bad"), "collection"),
        (pb.FindOneDocumentRequest(collection=""), "collection"),
        (pb.InsertDocumentsRequest(collection="c"), "documents"),
        (pb.InsertDocumentsRequest(collection="c", documents=['{"a": 1}', "3"]), "documents[1]"),
        (pb.UpdateDocumentsRequest(collection="c", filter="{}", update='{"a": 1}'), "update"),
        (
            pb.UpdateDocumentsRequest(collection="c", replacement='{"$set": {"a": 1}}'),
            "replacement",
        ),
        (pb.UpdateDocumentsRequest(collection="c"), "update"),
        (pb.AggregateDocumentsRequest(collection="c", pipeline='{"$match": {}}'), "pipeline"),
        (
            pb.AggregateDocumentsRequest(collection="c", pipeline='[{"$match": {}, "$limit": 1}]'),
            "pipeline[0]",
        ),
        (pb.CountDocumentsRequest(collection="c", limit=-1), "limit"),
        (pb.CreateIndexRequest(collection="c", keys='{"a": "sideways"}'), "keys.a"),
        (pb.CreateIndexRequest(collection="c", keys="{}"), "keys"),
        (pb.FindDocumentsRequest(collection="c", batch_size=-1), "batch_size"),
    ],
)
async def test_mongo_bad_input_names_the_field_and_changes_nothing(
    m: Mongo, request_: object, field: str
) -> None:
    await insert(m, "c", {"_id": 1, "a": 1})
    method = {
        pb.FindOneDocumentRequest: m.stub.FindOneDocument,
        pb.InsertDocumentsRequest: m.stub.InsertDocuments,
        pb.UpdateDocumentsRequest: m.stub.UpdateDocuments,
        pb.CountDocumentsRequest: m.stub.CountDocuments,
        pb.CreateIndexRequest: m.stub.CreateIndex,
    }.get(type(request_))
    if method is None:  # streaming RPCs
        stream = {
            pb.AggregateDocumentsRequest: m.stub.AggregateDocuments,
            pb.FindDocumentsRequest: m.stub.FindDocuments,
        }[type(request_)]

        async def drain() -> None:
            async for _ in stream(request_):
                pass

        error = await failure(drain())
    else:
        error = await failure(method(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field_violations(error) == [field]
    assert await m.raw.c.find().to_list() == [{"_id": 1, "a": 1}]
    assert [i["name"] async for i in await m.raw.c.list_indexes()] == ["_id_"]


async def test_mongo_unknown_database_is_not_found(m: Mongo) -> None:
    error = await failure(
        m.stub.CountDocuments(pb.CountDocumentsRequest(database="other", collection="c"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_mongo_stats_count_operations_latency_errors_and_pool(m: Mongo) -> None:
    await insert(m, "c", {"_id": 1})
    for _ in range(3):
        await m.stub.CountDocuments(pb.CountDocumentsRequest(collection="c"))
    await failure(insert(m, "c", {"_id": 1}))
    stats = await m.stub.GetDocumentStats(pb.GetDocumentStatsRequest())
    (db,) = stats.databases
    ops = {o.operation: o for o in db.operations}
    assert ops["count"].calls == 3
    assert ops["count"].errors == 0
    assert ops["insert"].calls == 2
    assert ops["insert"].errors == 1
    assert ops["insert"].documents == 1
    assert 0 < ops["count"].latency_p50_ms <= ops["count"].latency_p99_ms
    assert db.connections_created >= 1
    assert db.pool_in_use == 0
    assert db.pool_idle >= 1
    assert db.target.startswith("mongodb://")
    assert db.pool_size == 2
    names = {metric.name for metric in m.app.figures()}
    assert {"mongo_operations_total", "mongo_latency_p95_ms", "mongo_pool_in_use"} <= names


async def test_mongo_replies_hold_the_server_limits(mongodb_url: str, tmp_path: Path) -> None:
    name = f"paca_it_{uuid.uuid4().hex[:12]}"
    db = mongo_database("docs", database_url(mongodb_url, name))
    async with serve(tmp_path, db, max_rows=5, max_bytes=2_000) as (_, stub):
        small = [ejson({"_id": i}) for i in range(12)]
        big = ejson({"_id": "big", "blob": "x" * 3_000})
        await stub.InsertDocuments(pb.InsertDocumentsRequest(collection="c", documents=small))
        # A batch asked larger than PACA_DB_MAX_ROWS is cut to it.
        request = pb.FindDocumentsRequest(collection="c", batch_size=100)
        sizes = [len(b.documents) async for b in stub.FindDocuments(request)]
        assert sizes == [5, 5, 2]
        await stub.InsertDocuments(pb.InsertDocumentsRequest(collection="c", documents=[big]))
        error = await failure(
            stub.FindOneDocument(pb.FindOneDocumentRequest(collection="c", filter='{"_id": "big"}'))
        )
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        async def drain() -> None:
            async for _ in stub.FindDocuments(pb.FindDocumentsRequest(collection="c")):
                pass

        assert (await failure(drain())).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    await client.drop_database(name)
    await client.close()


async def test_mongo_operations_are_db_client_spans_without_values(
    m: Mongo, spans: InMemorySpanExporter
) -> None:
    secret = "value-7f3a"
    await insert(m, "c", {"_id": 1, "k": secret})
    await failure(insert(m, "c", {"_id": 1, "k": secret}))
    await find(m, "c", filter=ejson({"k": secret}))
    mongo = [
        s
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get(semconv.DB_SYSTEM_NAME) == "mongodb"
    ]
    assert [s.name for s in mongo] == ["insert c", "insert c", "find c"]
    assert all(s.kind == SpanKind.CLIENT for s in mongo)
    ok, duplicate, found = (dict(s.attributes or {}) for s in mongo)
    assert ok[semconv.DB_NAMESPACE] == m.raw.name
    assert ok[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert duplicate[semconv.DB_RESPONSE_STATUS_CODE] == "11000"
    assert mongo[1].status.status_code == StatusCode.ERROR
    assert found[semconv.DB_OPERATION_NAME] == "find"
    assert secret not in everything_recorded(mongo)
