"""ApiService.Call beside its floors: direct aiohttp, and a bare grpc.aio forwarder.

In one run against the same local upstream (its own process), at one concurrency:

(a) direct aiohttp: this process calls the upstream itself, the ceiling of the HTTP side;
(b) a bare grpc.aio forwarder (its own process): Call -> one shared aiohttp session -> reply,
    with no registry, policies, tracing or call log: the floor for any Python gRPC proxy;
(c) api_service (its own process) with its default policies (retries, host breaker, retry
    budget, stats) and its call log written through db_service (also its own process);
(d) a bare grpc.aio echo (its own process): Call -> a fixed reply, the floor of any answer
    that needs no upstream;
(e) api_service answering from its cache (an endpoint with a one-hour cache TTL).

    .venv/bin/python bench/api_call.py [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

import aiohttp
import grpc
from harness import free_port, measure, wait_for_port
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from paca_runtime.stack import ServiceProcess

UPSTREAM = """
import sys
from aiohttp import web
async def ok(request):
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_get("/ok", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

FORWARDER = """
import asyncio, sys
import aiohttp, grpc
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
ECHO = sys.argv[2:] == ["echo"]

class Forwarder(api_service_pb2_grpc.ApiServiceServicer):
    def __init__(self, session):
        self.session = session
    async def Call(self, request, context):
        if ECHO:
            return api_service_pb2.CallResponse(status_code=200, body=b'{"ok": true}')
        async with self.session.get(request.url) as response:
            body = await response.read()
            return api_service_pb2.CallResponse(status_code=response.status, body=body)

async def main():
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:
        server = grpc.aio.server()
        api_service_pb2_grpc.add_ApiServiceServicer_to_server(Forwarder(session), server)
        server.add_insecure_port("127.0.0.1:" + sys.argv[1])
        await server.start()
        await server.wait_for_termination()

asyncio.run(main())
"""


async def grpc_load(
    address: str,
    url: str,
    seconds: float,
    concurrency: int,
    request: api_service_pb2.CallRequest | None = None,
) -> tuple[float, float, float]:
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    stubs = [api_service_pb2_grpc.ApiServiceStub(c) for c in channels]
    request = request or api_service_pb2.CallRequest(url=url, provider="bench")
    turn = 0

    async def one() -> None:
        nonlocal turn
        turn += 1
        reply = await stubs[turn % len(stubs)].Call(request, timeout=10)
        assert reply.status_code == 200

    try:
        return await measure(one, seconds, concurrency)
    finally:
        for channel in channels:
            await channel.close()


def line(
    name: str, figures: tuple[float, float, float], base: float | None = None, of: str = "(b)"
) -> str:
    rate, p50, p99 = figures
    ratio = f"   {rate / base:6.0%} of {of}" if base else ""
    return f"{name:<34} {rate:8.0f} calls/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms{ratio}"


async def cache_hit_load(
    address: str, url: str, options: argparse.Namespace
) -> tuple[float, float, float]:
    """Register a cached endpoint for ``url`` and load it: every call after the first is a hit."""
    async with grpc.aio.insecure_channel(address) as channel:
        endpoint = api_types_pb2.Endpoint(
            name="bench.cached",
            provider="bench",
            base_url=url,
            cache=api_types_pb2.CachePolicy(enabled=True, override_upstream=True),
        )
        endpoint.cache.ttl.FromSeconds(3600)
        await api_service_pb2_grpc.ApiServiceStub(channel).RegisterEndpoint(
            api_service_pb2.RegisterEndpointRequest(endpoint=endpoint)
        )
    request = api_service_pb2.CallRequest(endpoint="bench.cached")
    return await grpc_load(address, url, options.seconds, options.concurrency, request)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    up_port, fwd_port, echo_port = free_port(), free_port(), free_port()
    echo: asyncio.subprocess.Process | None = None
    upstream = await asyncio.create_subprocess_exec(sys.executable, "-c", UPSTREAM, str(up_port))
    forwarder = await asyncio.create_subprocess_exec(sys.executable, "-c", FORWARDER, str(fwd_port))
    url = f"http://127.0.0.1:{up_port}/ok"
    try:
        await wait_for_port(up_port)
        await wait_for_port(fwd_port)
        print(
            f"GET {url} at concurrency {options.concurrency}, {options.seconds:g} s each, "
            f"{len(os.sched_getaffinity(0))} cores"
        )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:

            async def direct() -> None:
                async with session.get(url) as response:
                    await response.read()

            figures = await measure(direct, options.seconds, options.concurrency)
        print(line("(a) direct aiohttp", figures), flush=True)
        forwarder_figures = await grpc_load(
            f"127.0.0.1:{fwd_port}", url, options.seconds, options.concurrency
        )
        print(line("(b) bare grpc.aio forwarder", forwarder_figures), flush=True)
        forwarder.terminate()
        await forwarder.wait()
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "PACA_STATE_DIR": tmp,
                "PACA_MONITOR_ADDRESS": "",
                "PACA_LOG_LEVEL": "WARNING",
                "PACA_DB_LISTEN": "127.0.0.1:0",
                "PACA_API_LISTEN": "127.0.0.1:0",
            }
            db = ServiceProcess("db_service", env)
            db_address = (await db.start())["grpc"]
            api = ServiceProcess("api_service", {**env, "PACA_DB_ADDRESS": db_address})
            try:
                api_address = (await api.start())["grpc"]
                figures = await grpc_load(api_address, url, options.seconds, options.concurrency)
                print(line("(c) api_service, default policies", figures, forwarder_figures[0]))
                cached = await cache_hit_load(api_address, url, options)
            finally:
                await api.stop()
                await db.stop()
        echo = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FORWARDER, str(echo_port), "echo"
        )
        await wait_for_port(echo_port)
        echo_figures = await grpc_load(
            f"127.0.0.1:{echo_port}", url, options.seconds, options.concurrency
        )
        print(line("(d) bare grpc.aio echo", echo_figures))
        print(line("(e) api_service, cache hits", cached, echo_figures[0], "(d)"))
    finally:
        for child in (forwarder, upstream, echo):
            if child is not None and child.returncode is None:
                child.terminate()
                await child.wait()


if __name__ == "__main__":
    asyncio.run(main())
