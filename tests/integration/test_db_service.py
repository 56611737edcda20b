"""DbService on real engines: typed values, the idempotent call-log store, bad input, health."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiomysql
import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.backends.mysql import connect_kwargs
from tests.conftest import backing_url
from tests.integration.conftest import runtime_settings
from tests.integration.test_api_call import field_violations

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PLACEHOLDERS = {"sqlite": ["?", "?"], "postgresql": ["$1", "$2"], "mysql": ["%s", "%s"]}
DIALECTS = ["sqlite", "postgresql", "mysql"]


@asynccontextmanager
async def temporary_database(dialect: str, tmp_path: Path) -> AsyncIterator[str]:
    """URL of a fresh, empty database on ``dialect``'s test engine, dropped afterwards."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / f'db_{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"paca_it_{uuid.uuid4().hex[:12]}"
    if dialect == "postgresql":
        admin_url = backing_url("PACA_TEST_POSTGRES_URL")
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        return
    admin_url = backing_url("PACA_TEST_MYSQL_URL")
    conn = await aiomysql.connect(**connect_kwargs(admin_url))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE `{name}`")
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        async with conn.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(params=DIALECTS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with temporary_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def db(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel]]:
    settings = DbSettings(
        listen="127.0.0.1:0", databases=(DatabaseSettings("main", database_url),), pool_size=4
    )
    app = DbApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            dialect = settings.databases[0].dialect
            yield dialect, db_service_pb2_grpc.DbServiceStub(channel), channel
    finally:
        await app.stop()


def record(**overrides: object) -> db_types_pb2.ApiCallRecord:
    fields: dict[str, object] = {
        "record_id": str(uuid.uuid4()),
        "provider": "github",
        "success": True,
        "response_time_ms": 12.5,
        "data_json": '{"login": "octocat", "id": 9007199254740993}',
    }
    fields.update(overrides)
    return db_types_pb2.ApiCallRecord(**fields)  # type: ignore[arg-type]


async def test_record_api_calls_stores_each_record_once_even_when_resent(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    _, stub, _ = db
    batch = [record(), record(success=False, error_message="HTTP 500", data_json=None)]
    first = await stub.RecordApiCalls(db_service_pb2.RecordApiCallsRequest(records=batch))
    again = await stub.RecordApiCalls(db_service_pb2.RecordApiCallsRequest(records=batch))
    assert (first.inserted, first.duplicates) == (2, 0)
    assert (again.inserted, again.duplicates) == (0, 2)
    reply = await stub.Query(
        db_service_pb2.QueryRequest(
            sql="SELECT provider, success, error_message FROM external_api_logs ORDER BY id",
            read_only=True,
        )
    )
    rows = [[v.WhichOneof("kind") for v in row.values] for row in reply.rows]
    assert len(rows) == 2
    assert rows[1][2] == "string_value"
    assert rows[0][2] == "null_value"


async def test_invalid_record_names_the_field_and_stores_nothing(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    _, stub, _ = db
    batch = [record(), record(provider="x" * 51)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordApiCalls(db_service_pb2.RecordApiCallsRequest(records=batch))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["records[1].provider"]
    reply = await stub.Query(
        db_service_pb2.QueryRequest(sql="SELECT count(*) FROM external_api_logs", read_only=True)
    )
    assert reply.rows[0].values[0].int64_value == 0


async def test_typed_parameters_round_trip(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    dialect, stub, _ = db
    first, second = PLACEHOLDERS[dialect]
    cast = "::bigint" if dialect == "postgresql" else ""
    reply = await stub.Query(
        db_service_pb2.QueryRequest(
            sql=f"SELECT {first}{cast} AS big, {second}{'::text' if cast else ''} AS word",
            params=[
                values_pb2.Value(int64_value=9007199254740993),
                values_pb2.Value(string_value="héllo ☃"),
            ],
        )
    )
    assert [c.name for c in reply.columns] == ["big", "word"]
    big, word = reply.rows[0].values
    assert big.int64_value == 9007199254740993
    assert word.string_value == "héllo ☃"


async def test_null_and_max_rows_truncation(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    _, stub, _ = db
    await stub.RecordApiCalls(
        db_service_pb2.RecordApiCallsRequest(records=[record() for _ in range(5)])
    )
    reply = await stub.Query(
        db_service_pb2.QueryRequest(
            sql="SELECT error_message FROM external_api_logs", read_only=True, max_rows=3
        )
    )
    assert len(reply.rows) == 3
    assert reply.truncated
    assert reply.rows[0].values[0].null_value == struct_pb2.NULL_VALUE


async def test_bad_sql_unknown_database_and_read_only_writes_are_refused(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    _, stub, _ = db
    cases = [
        (db_service_pb2.QueryRequest(sql="SELEC nonsense"), "INVALID_ARGUMENT", ["sql"]),
        (db_service_pb2.QueryRequest(sql=" "), "INVALID_ARGUMENT", ["sql"]),
        (
            db_service_pb2.QueryRequest(sql="DELETE FROM external_api_logs", read_only=True),
            "INVALID_ARGUMENT",
            ["read_only"],
        ),
        (db_service_pb2.QueryRequest(database="nope", sql="SELECT 1"), "NOT_FOUND", []),
        (
            db_service_pb2.QueryRequest(
                sql="SELECT 1", params=[values_pb2.Value(decimal_value="1.2.3")]
            ),
            "INVALID_ARGUMENT",
            ["params[0]"],
        ),
    ]
    for request, code, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(request)
        assert caught.value.code().name == code, request
        assert field_violations(caught.value) == fields, request


async def test_health_reports_serving_for_the_service(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    _, _, channel = db
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "paca.db.v1.DbService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def engine_code(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(domain, code) of the ErrorInfo a db_service error carries."""
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.reason == "ENGINE_ERROR"
            return info.domain, info.metadata["code"]
    raise AssertionError(f"no ErrorInfo in {error}")


ENGINE_CODES = {
    "sqlite": {"syntax": "SQLITE_ERROR", "unique": "SQLITE_CONSTRAINT_PRIMARYKEY"},
    "postgresql": {"syntax": "42601", "unique": "23505", "not_null": "23502"},
    "mysql": {"syntax": "1064", "unique": "1062", "not_null": "1048"},
}


async def test_engine_errors_map_to_status_codes_with_the_engine_code(
    db: tuple[str, db_service_pb2_grpc.DbServiceStub, grpc.aio.Channel],
) -> None:
    dialect, stub, _ = db
    codes = ENGINE_CODES[dialect]
    await stub.Query(
        db_service_pb2.QueryRequest(
            sql="CREATE TABLE u (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
        )
    )
    await stub.Query(db_service_pb2.QueryRequest(sql="INSERT INTO u (k, v) VALUES (1, 1)"))
    cases = [
        ("SELEC 1", grpc.StatusCode.INVALID_ARGUMENT, "syntax"),
        ("INSERT INTO u (k, v) VALUES (1, 2)", grpc.StatusCode.ALREADY_EXISTS, "unique"),
        ("INSERT INTO u (k, v) VALUES (2, NULL)", grpc.StatusCode.FAILED_PRECONDITION, "not_null"),
    ]
    for sql, code, kind in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(db_service_pb2.QueryRequest(sql=sql))
        assert caught.value.code() == code, sql
        domain, engine = engine_code(caught.value)
        assert domain == dialect
        assert engine == codes.get(kind, engine), sql
