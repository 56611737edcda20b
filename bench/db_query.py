"""DbService.Query of a small row beside its floors, and StreamQuery rows/s, in one run.

Against the same PostgreSQL, at one concurrency:

(a) direct asyncpg: this process queries through its own pool (the same size as db_service's),
    the ceiling of the database side;
(b) a bare grpc.aio echo (its own process) answering Query with a canned row: the floor for any
    Python gRPC service, no database behind it;
(c) db_service (its own process): Query with the same SQL and parameter;
(d) db_service: Select through the query builder (schema check + SQLAlchemy compile per call).
Then rows/s of one large result: asyncpg's cursor in this process vs. StreamQuery.

    set -a; . var/backing/env; set +a
    .venv/bin/python bench/db_query.py [--seconds 5] [--concurrency 32] [--stream-rows 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
from harness import Figures, free_port, measure, wait_for_port
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from paca_runtime.stack import ServiceProcess

POOL_SIZE = 10
SQL = "SELECT id, name FROM bench_items WHERE id = $1"
STREAM_SQL = "SELECT n, 'row ' || n AS label FROM generate_series(1, {rows}) AS n"

ECHO = """
import asyncio, sys
import grpc
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, values_pb2

REPLY = db_service_pb2.QueryResponse(
    columns=[values_pb2.Column(name="id"), values_pb2.Column(name="name")],
    rows=[values_pb2.Row(values=[values_pb2.Value(int64_value=1),
                                 values_pb2.Value(string_value="hello")])],
)

class Echo(db_service_pb2_grpc.DbServiceServicer):
    async def Query(self, request, context):
        return REPLY

async def main():
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    server = grpc.aio.server()
    db_service_pb2_grpc.add_DbServiceServicer_to_server(Echo(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


async def grpc_load(
    address: str,
    call: Callable[[db_service_pb2_grpc.DbServiceStub], Awaitable[None]],
    seconds: float,
    concurrency: int,
) -> Figures:
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    stubs = [db_service_pb2_grpc.DbServiceStub(c) for c in channels]
    turn = 0

    async def one() -> None:
        nonlocal turn
        turn += 1
        await call(stubs[turn % len(stubs)])

    try:
        return await measure(one, seconds, concurrency)
    finally:
        for channel in channels:
            await channel.close()


async def query(stub: db_service_pb2_grpc.DbServiceStub) -> None:
    request = db_service_pb2.QueryRequest(
        sql=SQL, params=[values_pb2.Value(int64_value=1)], read_only=True
    )
    reply = await stub.Query(request, timeout=10)
    assert len(reply.rows) == 1


async def select(stub: db_service_pb2_grpc.DbServiceStub) -> None:
    where = db_types_pb2.Filter(
        comparison=db_types_pb2.Filter.Comparison(
            column="id",
            operator=db_types_pb2.FILTER_OPERATOR_EQ,
            values=[values_pb2.Value(int64_value=1)],
        )
    )
    request = db_service_pb2.SelectRequest(
        select=db_types_pb2.Select(table="bench_items", columns=["id", "name"], where=where)
    )
    reply = await stub.Select(request, timeout=10)
    assert len(reply.rows) == 1


def line(name: str, figures: Figures, base: float | None = None) -> str:
    rate, p50, p99 = figures
    ratio = f"   {rate / base:6.0%} of (b)" if base else ""
    return f"{name:<34} {rate:8.0f} calls/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms{ratio}"


async def stream_rates(url: str, address: str, rows: int) -> tuple[float, float]:
    sql = STREAM_SQL.format(rows=rows)
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        count = 0
        async with conn.transaction():
            async for _ in conn.cursor(sql, prefetch=1000):
                count += 1
        direct = count / (time.perf_counter() - started)
    finally:
        await conn.close()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = db_service_pb2_grpc.DbServiceStub(channel)
        started = time.perf_counter()
        count = 0
        async for chunk in stub.StreamQuery(db_service_pb2.StreamQueryRequest(sql=sql)):
            count += len(chunk.rows)
        streamed = count / (time.perf_counter() - started)
    assert count == rows
    return direct, streamed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-rows", type=int, default=200_000)
    parser.add_argument("--url", default=os.environ.get("PACA_TEST_POSTGRES_URL", ""))
    options = parser.parse_args()
    if not options.url:
        sys.exit("set PACA_TEST_POSTGRES_URL (. var/backing/env) or pass --url")
    setup = await asyncpg.connect(options.url)
    await setup.execute(
        "DROP TABLE IF EXISTS bench_items;"
        " CREATE TABLE bench_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        " INSERT INTO bench_items VALUES (1, 'hello');"
    )
    echo_port = free_port()
    echo = await asyncio.create_subprocess_exec(sys.executable, "-c", ECHO, str(echo_port))
    try:
        await wait_for_port(echo_port)
        print(
            f"{SQL!r} at concurrency {options.concurrency}, {options.seconds:g} s each, "
            f"pool {POOL_SIZE}, {len(os.sched_getaffinity(0))} cores"
        )
        pool = await asyncpg.create_pool(options.url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:

            async def direct() -> None:
                assert await pool.fetchrow(SQL, 1) is not None

            figures = await measure(direct, options.seconds, options.concurrency)
        finally:
            await pool.close()
        print(line("(a) direct asyncpg", figures), flush=True)
        echo_figures = await grpc_load(
            f"127.0.0.1:{echo_port}", query, options.seconds, options.concurrency
        )
        print(line("(b) bare grpc.aio echo", echo_figures), flush=True)
        echo.terminate()
        await echo.wait()
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "PACA_STATE_DIR": tmp,
                "PACA_MONITOR_ADDRESS": "",
                "PACA_LOG_LEVEL": "WARNING",
                "PACA_DB_LISTEN": "127.0.0.1:0",
                "PACA_DB_URL": options.url,
                "DB_POOL_SIZE": str(POOL_SIZE),
            }
            db = ServiceProcess("db_service", env)
            address = (await db.start())["grpc"]
            try:
                figures = await grpc_load(address, query, options.seconds, options.concurrency)
                print(line("(c) db_service Query", figures, echo_figures[0]), flush=True)
                figures = await grpc_load(address, select, options.seconds, options.concurrency)
                print(line("(d) db_service Select (builder)", figures, echo_figures[0]), flush=True)
                direct_rate, stream_rate = await stream_rates(
                    options.url, address, options.stream_rows
                )
            finally:
                await db.stop()
        print(
            f"{options.stream_rows} rows: asyncpg cursor {direct_rate:,.0f} rows/s,"
            f" StreamQuery {stream_rate:,.0f} rows/s ({stream_rate / direct_rate:.0%})"
        )
    finally:
        if echo.returncode is None:
            echo.terminate()
            await echo.wait()
        await setup.execute("DROP TABLE IF EXISTS bench_items")
        await setup.close()


if __name__ == "__main__":
    asyncio.run(main())
