"""Redis GET and SET through db_service's KeyValueService beside redis-py directly, in one run.

Against the same Redis, at one concurrency, with the same pool size on both sides:

(a) redis-py directly: this process runs GET / SET on its own pooled asyncio client, the ceiling;
(b) a bare grpc.aio echo (its own process) answering Command with a canned value: the floor of
    any Python gRPC service, no Redis behind it;
(c) db_service (its own process): KeyValueService.Command with the same GET / SET.
Then one Pipeline of 100 GETs through db_service vs. a redis-py pipeline, in keys/s.

    set -a; . var/backing/env; set +a
    .venv/bin/python bench/db_redis.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import grpc
import redis.asyncio as redis
from harness import Figures, free_port, measure, wait_for_port
from paca.db.v1 import key_value_service_pb2 as pb
from paca.db.v1 import key_value_service_pb2_grpc as pb_grpc

from paca_runtime.stack import ServiceProcess

POOL_SIZE = 16
# A database of its own, so the benchmark never touches test data; only its keys are removed.
BENCH_DB = 6
KEY = "bench:kv"
VALUE = b"v" * 100
PIPELINE_KEYS = 100

GET = pb.CommandRequest(database="bench", command=pb.KeyValueCommand(get=pb.GetCommand(key=KEY)))
SET = pb.CommandRequest(
    database="bench", command=pb.KeyValueCommand(set=pb.SetCommand(key=KEY, value=VALUE))
)
ECHO = """
import asyncio, sys
import grpc
from paca.db.v1 import key_value_service_pb2 as pb, key_value_service_pb2_grpc as pb_grpc

GOT = pb.CommandResponse(result=pb.KeyValueResult(value=b"v" * 100))
SET = pb.CommandResponse(result=pb.KeyValueResult(ok=True))

class Echo(pb_grpc.KeyValueServiceServicer):
    async def Command(self, request, context):
        return GOT if request.command.HasField("get") else SET

async def main():
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    server = grpc.aio.server()
    pb_grpc.add_KeyValueServiceServicer_to_server(Echo(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""

PIPELINE = pb.PipelineRequest(
    database="bench",
    commands=[
        pb.KeyValueCommand(get=pb.GetCommand(key=f"{KEY}:{i}")) for i in range(PIPELINE_KEYS)
    ],
)


def line(name: str, figures: Figures, base: float | None = None) -> str:
    rate, p50, p99 = figures
    ratio = f"   {rate / base:6.0%} of direct" if base else ""
    return f"{name:<30} {rate:8.0f} calls/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms{ratio}"


async def grpc_load(
    address: str,
    call: Callable[[pb_grpc.KeyValueServiceStub], Awaitable[None]],
    seconds: float,
    concurrency: int,
) -> Figures:
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    stubs = [pb_grpc.KeyValueServiceStub(c) for c in channels]
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


async def service_get(stub: pb_grpc.KeyValueServiceStub) -> None:
    reply = await stub.Command(GET, timeout=10)
    assert reply.result.value == VALUE


async def service_set(stub: pb_grpc.KeyValueServiceStub) -> None:
    reply = await stub.Command(SET, timeout=10)
    assert reply.result.ok


async def pipeline_rates(client: redis.Redis, address: str, rounds: int) -> tuple[float, float]:
    """Keys/s of ``rounds`` pipelines of PIPELINE_KEYS GETs: redis-py, then db_service."""
    started = time.perf_counter()
    for _ in range(rounds):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(PIPELINE_KEYS):
                pipe.get(f"{KEY}:{i}")
            assert len(await pipe.execute()) == PIPELINE_KEYS
    direct = rounds * PIPELINE_KEYS / (time.perf_counter() - started)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.KeyValueServiceStub(channel)
        started = time.perf_counter()
        for _ in range(rounds):
            reply = await stub.Pipeline(PIPELINE, timeout=10)
            assert len(reply.results) == PIPELINE_KEYS
        through = rounds * PIPELINE_KEYS / (time.perf_counter() - started)
    return direct, through


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pipeline-rounds", type=int, default=200)
    parser.add_argument("--url", default=os.environ.get("PACA_TEST_REDIS_URL", ""))
    options = parser.parse_args()
    if not options.url:
        sys.exit("set PACA_TEST_REDIS_URL (. var/backing/env) or pass --url")
    url = urlunsplit(urlsplit(options.url)._replace(path=f"/{BENCH_DB}"))
    client = redis.Redis(
        connection_pool=redis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE)
    )
    keys = [KEY, *(f"{KEY}:{i}" for i in range(PIPELINE_KEYS))]
    try:
        await client.mset(dict.fromkeys(keys, VALUE))
        print(
            f"GET / SET of a {len(VALUE)}-byte value at concurrency {options.concurrency},"
            f" {options.seconds:g} s each, pool {POOL_SIZE},"
            f" {len(os.sched_getaffinity(0))} cores"
        )

        async def direct_get() -> None:
            assert await client.get(KEY) == VALUE

        async def direct_set() -> None:
            assert await client.set(KEY, VALUE)

        get_base = await measure(direct_get, options.seconds, options.concurrency)
        print(line("(a) redis-py GET", get_base), flush=True)
        set_base = await measure(direct_set, options.seconds, options.concurrency)
        print(line("(a) redis-py SET", set_base), flush=True)
        echo_port = free_port()
        echo = await asyncio.create_subprocess_exec(sys.executable, "-c", ECHO, str(echo_port))
        try:
            await wait_for_port(echo_port)
            address = f"127.0.0.1:{echo_port}"
            for name, call, base in (
                ("GET", service_get, get_base),
                ("SET", service_set, set_base),
            ):
                figures = await grpc_load(address, call, options.seconds, options.concurrency)
                print(line(f"(b) bare grpc.aio echo {name}", figures, base[0]), flush=True)
        finally:
            echo.terminate()
            await echo.wait()
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "PACA_STATE_DIR": tmp,
                "PACA_MONITOR_ADDRESS": "",
                "PACA_LOG_LEVEL": "WARNING",
                "PACA_DB_LISTEN": "127.0.0.1:0",
                "PACA_REDIS_DATABASES": f"bench={url}",
                "PACA_REDIS_POOL_SIZE": str(POOL_SIZE),
            }
            db = ServiceProcess("db_service", env)
            address = (await db.start())["grpc"]
            try:
                figures = await grpc_load(
                    address, service_get, options.seconds, options.concurrency
                )
                print(line("(c) db_service Command GET", figures, get_base[0]), flush=True)
                figures = await grpc_load(
                    address, service_set, options.seconds, options.concurrency
                )
                print(line("(c) db_service Command SET", figures, set_base[0]), flush=True)
                direct, through = await pipeline_rates(client, address, options.pipeline_rounds)
            finally:
                await db.stop()
        print(
            f"pipelines of {PIPELINE_KEYS} GETs, one at a time: redis-py {direct:,.0f} keys/s,"
            f" db_service Pipeline {through:,.0f} keys/s ({through / direct:.0%})"
        )
    finally:
        await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
