"""Execute, ExecuteBatch, StreamQuery and statement time limits on every SQL engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from google.protobuf import duration_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, values_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from tests.integration.conftest import runtime_settings
from tests.integration.test_db_service import DIALECTS, PLACEHOLDERS, temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Value = values_pb2.Value

# A statement that runs far longer than any test waits, per engine.
SLOW = {
    "postgresql": "SELECT pg_sleep(30)",
    "mysql": "SELECT SLEEP(30)",
    "sqlite": (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    ),
}
# The identity of the connection a statement runs on (SQLite: one process, no such thing).
CONNECTION_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def numbers(dialect: str, count: int, width: int = 1) -> str:
    """SQL producing rows (n, filler) for n in 1..count, in order, on ``dialect``."""
    if dialect == "postgresql":
        return f"SELECT n, repeat('x', {width}) AS filler FROM generate_series(1, {count}) AS n"
    if dialect == "mysql":
        # MariaDB's sequence engine (recursive CTEs stop at max_recursive_iterations, 1000).
        return f"SELECT seq AS n, repeat('x', {width}) AS filler FROM seq_1_to_{count}"
    filler = f"substr(hex(zeroblob({width})), 1, {width})"
    return (
        f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {count})"
        f" SELECT n, {filler} AS filler FROM s"
    )


@dataclass
class Served:
    dialect: str
    app: DbApp
    stub: db_service_pb2_grpc.DbServiceStub


@contextlib.asynccontextmanager
async def serve(dialect: str, tmp_path: Path, pool_size: int = 4) -> AsyncIterator[Served]:
    async with temporary_database(dialect, tmp_path) as url:
        settings = DbSettings(
            listen="127.0.0.1:0",
            databases=(DatabaseSettings("main", url),),
            pool_size=pool_size,
            stream_chunk_rows=1000,
        )
        app = DbApp(settings, runtime_settings(tmp_path))
        await app.start()
        try:
            async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
                yield Served(dialect, app, db_service_pb2_grpc.DbServiceStub(channel))
        finally:
            await app.stop()


@pytest.fixture(params=DIALECTS)
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(request.param, tmp_path) as result:
        yield result


def marks(dialect: str) -> tuple[str, str]:
    first, second = PLACEHOLDERS[dialect]
    return first, second


async def test_execute_batch_is_one_transaction_and_execute_reports_rows_affected(
    served: Served,
) -> None:
    stub, (a, b) = served.stub, marks(served.dialect)
    await stub.Execute(
        db_service_pb2.ExecuteRequest(sql="CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    )
    insert = f"INSERT INTO t (k, v) VALUES ({a}, {b})"

    def sets(*keys: int) -> list[values_pb2.ValueList]:
        return [
            values_pb2.ValueList(values=[Value(int64_value=k), Value(string_value=f"v{k}")])
            for k in keys
        ]

    reply = await stub.ExecuteBatch(
        db_service_pb2.ExecuteBatchRequest(sql=insert, param_sets=sets(1, 2, 3))
    )
    assert reply.rows_affected == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ExecuteBatch(
            db_service_pb2.ExecuteBatchRequest(sql=insert, param_sets=sets(4, 1))
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    updated = await stub.Execute(
        db_service_pb2.ExecuteRequest(
            sql=f"UPDATE t SET v = {a} WHERE k >= {b}",
            params=[Value(string_value="new"), Value(int64_value=2)],
        )
    )
    assert updated.rows_affected == 2
    count = await stub.Query(db_service_pb2.QueryRequest(sql="SELECT count(*) FROM t"))
    assert count.rows[0].values[0].int64_value == 3  # row 4 of the failed batch is not there


async def test_query_max_bytes_truncates_the_reply(served: Served) -> None:
    reply = await served.stub.Query(
        db_service_pb2.QueryRequest(
            sql=numbers(served.dialect, 100, width=100), read_only=True, max_bytes=1000
        )
    )
    assert reply.truncated
    assert 1 <= len(reply.rows) < 10
    assert sum(r.ByteSize() for r in reply.rows) <= 1000


async def test_stream_query_returns_every_row_in_chunks_with_columns_first(
    served: Served,
) -> None:
    responses = [
        r
        async for r in served.stub.StreamQuery(
            db_service_pb2.StreamQueryRequest(sql=numbers(served.dialect, 5000), chunk_rows=1000)
        )
    ]
    assert [c.name for c in responses[0].columns] == ["n", "filler"]
    assert all(not r.columns for r in responses[1:])
    assert all(len(r.rows) <= 1000 for r in responses)
    got = [row.values[0].int64_value for r in responses for row in r.rows]
    assert got == list(range(1, 5001))
    limited = [
        row
        async for r in served.stub.StreamQuery(
            db_service_pb2.StreamQueryRequest(sql=numbers(served.dialect, 5000), max_rows=1500)
        )
        for row in r.rows
    ]
    assert len(limited) == 1500


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_deadline_cancels_the_statement_on_the_engine_and_the_connection_is_reused(
    dialect: str, tmp_path: Path
) -> None:
    async with serve(dialect, tmp_path, pool_size=1) as served:
        stub = served.stub
        before = (
            await stub.Query(db_service_pb2.QueryRequest(sql=CONNECTION_ID[dialect]))
            if dialect in CONNECTION_ID
            else None
        )
        size = served.app.databases.get("main").pool_stats().size
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(db_service_pb2.QueryRequest(sql=SLOW[dialect]), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # A request timeout works the same way without a gRPC deadline.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(
                db_service_pb2.QueryRequest(
                    sql=SLOW[dialect], timeout=duration_pb2.Duration(nanos=300_000_000)
                )
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - started < 10  # the engine stopped well before the 30 s sleep
        if before is not None:
            after = await stub.Query(db_service_pb2.QueryRequest(sql=CONNECTION_ID[dialect]))
            assert after.rows[0] == before.rows[0]  # the one pooled connection survived
        assert served.app.databases.get("main").pool_stats().size == size


@pytest.mark.timeout(120)
async def test_stream_of_a_million_rows_keeps_memory_flat(tmp_path: Path) -> None:
    async with serve("postgresql", tmp_path) as served:
        process = psutil.Process()
        seen, baseline, peak = 0, 0, 0
        async for response in served.stub.StreamQuery(
            db_service_pb2.StreamQueryRequest(sql=numbers("postgresql", 1_000_000, width=50))
        ):
            seen += len(response.rows)
            if not baseline and seen >= 100_000:
                baseline = process.memory_info().rss
            elif baseline and seen % 100_000 < len(response.rows):
                peak = max(peak, process.memory_info().rss)
        assert seen == 1_000_000
        # Server and client share this process; all 1M rows (~80 MB on the wire) never are
        # in memory at once.
        assert peak - baseline < 40 * 1024 * 1024, (baseline, peak)


async def test_slow_reader_holds_back_the_server_side_cursor(tmp_path: Path) -> None:
    async with serve("postgresql", tmp_path) as served:
        backend = served.app.databases.get("main")
        call = served.stub.StreamQuery(
            db_service_pb2.StreamQueryRequest(
                sql=numbers("postgresql", 500_000, width=1000), chunk_rows=100
            )
        )
        read = len((await call.read()).rows)  # the columns
        read += len((await call.read()).rows)
        # Let the server run ahead until flow control stops it, then check how far it got.
        streamed = -1
        while streamed != backend.rows_streamed:
            streamed = backend.rows_streamed
            await asyncio.sleep(0.2)  # no event marks "blocked on flow control": watch it settle
        assert streamed < 100_000, streamed  # 500 MB of rows were not read ahead
        call.cancel()


async def test_a_query_prepared_before_a_schema_change_sees_the_new_columns(
    served: Served,
) -> None:
    stub = served.stub
    await stub.Execute(db_service_pb2.ExecuteRequest(sql="CREATE TABLE s (a INTEGER)"))
    query = db_service_pb2.QueryRequest(sql="SELECT * FROM s", read_only=True)
    assert [c.name for c in (await stub.Query(query)).columns] == ["a"]
    await stub.Execute(db_service_pb2.ExecuteRequest(sql="ALTER TABLE s ADD COLUMN b INTEGER"))
    assert [c.name for c in (await stub.Query(query)).columns] == ["a", "b"]
