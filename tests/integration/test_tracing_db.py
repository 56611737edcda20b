"""Each statement db_service runs is a DB client span as the database conventions describe,
on SQLite, PostgreSQL and MySQL/MariaDB, with no value of a statement in any span."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, values_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from paca_runtime import semconv
from tests.integration.conftest import runtime_settings
from tests.integration.test_db_service import DIALECTS, PLACEHOLDERS, temporary_database
from tests.integration.test_tracing_http_rpc import everything_recorded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "s3cr3t"
UNIQUE_VIOLATION = {
    "sqlite": "SQLITE_CONSTRAINT_PRIMARYKEY",
    "postgresql": "23505",
    "mysql": "1062",
}


@pytest.fixture(params=DIALECTS)
async def traced_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str, DbApp]]:
    async with temporary_database(request.param, tmp_path) as url:
        settings = DbSettings(
            listen="127.0.0.1:0", databases=(DatabaseSettings("main", url),), pool_size=2
        )
        app = DbApp(settings, runtime_settings(tmp_path))
        await app.start()
        try:
            yield request.param, url, app
        finally:
            await app.stop()


def db_spans(exporter: InMemorySpanExporter, marker: str) -> list[ReadableSpan]:
    found = [
        s
        for s in exporter.get_finished_spans()
        if marker in str((s.attributes or {}).get(semconv.DB_QUERY_TEXT, ""))
    ]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_statements_are_db_client_spans_with_sanitized_text_and_engine_error_codes(
    traced_db: tuple[str, str, DbApp], spans: InMemorySpanExporter
) -> None:
    dialect, url, app = traced_db
    one, two = PLACEHOLDERS[dialect]
    secret = values_pb2.Value(string_value=SECRET)
    async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
        db = db_service_pb2_grpc.DbServiceStub(channel)
        await db.Execute(
            db_service_pb2.ExecuteRequest(
                sql="CREATE TABLE traced (id INTEGER PRIMARY KEY, note VARCHAR(40))"
            )
        )
        insert = f"INSERT INTO traced (id, note) VALUES ({one}, {two})"
        await db.Execute(
            db_service_pb2.ExecuteRequest(
                sql=insert, params=[values_pb2.Value(int64_value=1), secret]
            )
        )
        await db.ExecuteBatch(
            db_service_pb2.ExecuteBatchRequest(
                sql=insert,
                param_sets=[
                    values_pb2.ValueList(values=[values_pb2.Value(int64_value=i), secret])
                    for i in (2, 3)
                ],
            )
        )
        reply = await db.Query(
            db_service_pb2.QueryRequest(
                sql=f"SELECT id FROM traced WHERE note = '{SECRET}' OR id = 4242", read_only=True
            )
        )
        assert len(reply.rows) == 3
        streamed = db.StreamQuery(
            db_service_pb2.StreamQueryRequest(
                sql="SELECT note FROM traced ORDER BY id", chunk_rows=2
            )
        )
        assert sum([len(chunk.rows) async for chunk in streamed]) == 3
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await db.Execute(
                db_service_pb2.ExecuteRequest(
                    sql=insert, params=[values_pb2.Value(int64_value=1), secret]
                )
            )
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

    # The server says which of the two it is: the test engine is either.
    mariadb = getattr(app.databases.get("main"), "mariadb", False)
    system = {"sqlite": "sqlite", "postgresql": "postgresql"}.get(
        dialect, "mariadb" if mariadb else "mysql"
    )
    inserts = db_spans(spans, "INSERT INTO traced")
    assert len(inserts) == 3
    single, batch, duplicate = inserts
    select = db_spans(spans, "SELECT id FROM traced")[0]
    for span in (*inserts, select):
        attributes = span.attributes or {}
        assert span.kind == SpanKind.CLIENT
        assert attributes[semconv.DB_SYSTEM_NAME] == system
        database = url.rpartition("/")[2]
        assert str(attributes[semconv.DB_NAMESPACE]).endswith(database)
        if dialect == "sqlite":
            assert semconv.SERVER_ADDRESS not in attributes
        else:
            assert attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
            assert attributes[semconv.SERVER_PORT] == int(url.split(":")[-1].split("/")[0])
        # Under the db_service server span of the RPC that ran it.
        assert span.parent is not None
    assert (single.attributes or {})[semconv.DB_QUERY_TEXT] == insert
    assert single.name == "INSERT traced"
    assert (single.attributes or {})[semconv.DB_OPERATION_NAME] == "INSERT"
    assert (batch.attributes or {})[semconv.DB_OPERATION_NAME] == "BATCH INSERT"
    assert (batch.attributes or {})[semconv.DB_OPERATION_BATCH_SIZE] == 2
    assert batch.name == "BATCH INSERT traced"
    # The literals the caller wrote into the SQL are not recorded either.
    assert (select.attributes or {})[semconv.DB_QUERY_TEXT] == (
        "SELECT id FROM traced WHERE note = ? OR id = ?"
    )
    assert (select.attributes or {})[semconv.DB_OPERATION_NAME] == "SELECT"
    assert (select.attributes or {})["db.response.returned_rows"] == 3
    assert select.status.status_code == StatusCode.UNSET
    (stream,) = db_spans(spans, "SELECT note FROM traced")
    assert stream.kind == SpanKind.CLIENT
    assert stream.name == "SELECT traced"
    assert (stream.attributes or {})["db.response.returned_rows"] == 3
    failed = duplicate.attributes or {}
    assert failed[semconv.DB_RESPONSE_STATUS_CODE] == UNIQUE_VIOLATION[dialect]
    assert failed[semconv.ERROR_TYPE] == UNIQUE_VIOLATION[dialect]
    assert duplicate.status.status_code == StatusCode.ERROR
    assert SECRET not in everything_recorded(spans.get_finished_spans())


async def test_statements_of_a_transaction_are_db_client_spans_too(
    traced_db: tuple[str, str, DbApp], spans: InMemorySpanExporter
) -> None:
    dialect, _, app = traced_db
    one, two = PLACEHOLDERS[dialect]
    request = db_service_pb2.TransactionRequest
    async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
        db = db_service_pb2_grpc.DbServiceStub(channel)
        await db.Execute(
            db_service_pb2.ExecuteRequest(sql="CREATE TABLE tx (id INTEGER PRIMARY KEY, s TEXT)")
        )
        call = db.Transaction()
        statement = db_service_pb2.TransactionStatement(
            sql=f"INSERT INTO tx (id, s) VALUES ({one}, {two})",
            params=[values_pb2.Value(int64_value=1), values_pb2.Value(string_value=SECRET)],
        )
        for action in (
            request(begin=db_service_pb2.BeginTransaction()),
            request(statement=statement),
            request(savepoint=db_service_pb2.SavepointAction(name="after_one")),
            request(commit=True),
        ):
            await call.write(action)
            assert isinstance(await call.read(), db_service_pb2.TransactionResponse)
        assert await call.code() == grpc.StatusCode.OK

    server = next(s for s in spans.get_finished_spans() if s.name.endswith("/Transaction"))
    inside = [
        s
        for s in spans.get_finished_spans()
        if s.parent is not None and s.parent.span_id == server.context.span_id
    ]
    operations = [(s.attributes or {}).get(semconv.DB_OPERATION_NAME) for s in inside]
    assert {"INSERT", "SAVEPOINT", "COMMIT"} <= set(operations), operations
    for span in inside:
        assert span.kind == SpanKind.CLIENT
        assert (span.attributes or {})[semconv.DB_SYSTEM_NAME] in (
            "sqlite",
            "postgresql",
            "mysql",
            "mariadb",
        )
    (write,) = [
        s for s in inside if (s.attributes or {}).get(semconv.DB_OPERATION_NAME) == "INSERT"
    ]
    assert write.name == "INSERT tx"
    assert SECRET not in everything_recorded(spans.get_finished_spans())
