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

The baselines run on uvloop when it is installed, as api_service does. Every server is started
once; the five loads then take turns for ``--rounds`` rounds, so drift on a shared machine
spreads evenly, and each line of the summary is the median of its rounds. Beside throughput,
each line shows the CPU time the serving process spent per call (all its threads): on a machine
shared with other work it moves much less than throughput, and its ratio to the baseline's is
the throughput ratio the two would have on an otherwise idle core.

With ``--baseline DIR`` (a copy of the tree from before a change, e.g. `git archive HEAD | tar
-x -C DIR`), a second api_service runs DIR's code beside this tree's, against the same upstream
and db_service, and its loads (c0) and (e0) take their turns in every round too (before (c)
and (e) in odd rounds, after them in even ones), so a change's before and after come from one
run.

    .venv/bin/python bench/api_call.py [--seconds 10] [--concurrency 64] [--rounds 3]
        [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
import psutil
from harness import UPSTREAM, Figures, free_port, measure, wait_for_port
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from paca_runtime.stack import ServiceProcess

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
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:
        server = grpc.aio.server()
        api_service_pb2_grpc.add_ApiServiceServicer_to_server(Forwarder(session), server)
        server.add_insecure_port("127.0.0.1:" + sys.argv[1])
        await server.start()
        await server.wait_for_termination()

try:
    import uvloop
except ImportError:
    asyncio.run(main())
else:
    uvloop.run(main())
"""

# calls/s, p50 ms, p99 ms, the serving process's CPU ms per call
Run = tuple[float, float, float, float]
DIRECT = "(a) direct aiohttp"
FORWARD = "(b) bare grpc.aio forwarder"
API = "(c) api_service, default policies"
ECHO = "(d) bare grpc.aio echo"
CACHED = "(e) api_service, cache hits"
API0 = "(c0) api_service, baseline"
CACHED0 = "(e0) api_service cache hits, baseline"
NAMES = (DIRECT, FORWARD, API0, API, ECHO, CACHED0, CACHED)


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


async def register_cached(address: str, url: str) -> api_service_pb2.CallRequest:
    """Register an endpoint for ``url`` with a one-hour cache TTL; its calls are cache hits."""
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
    return api_service_pb2.CallRequest(endpoint="bench.cached")


async def cache_hit_load(
    address: str, url: str, options: argparse.Namespace
) -> tuple[float, float, float]:
    """Register a cached endpoint for ``url`` and load it: every call after the first is a hit."""
    request = await register_cached(address, url)
    return await grpc_load(address, url, options.seconds, options.concurrency, request)


async def with_cpu(pid: int, load: Awaitable[Figures], calls_extra: int, seconds: float) -> Run:
    """``load``'s figures and the CPU time process ``pid`` spent per call meanwhile."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    rate, p50, p99 = await load
    after = process.cpu_times()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    calls = rate * seconds + calls_extra  # the timed calls and the warm-up
    return rate, p50, p99, cpu_s / calls * 1000


def median(runs: list[Run]) -> Run:
    rate, p50, p99, cpu = zip(*runs, strict=True)
    return (
        statistics.median(rate),
        statistics.median(p50),
        statistics.median(p99),
        statistics.median(cpu),
    )


def line(name: str, run: Run, base: Run | None = None, of: str = "") -> str:
    rate, p50, p99, cpu = run
    text = (
        f"{name:<38} {rate:6.0f} calls/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
        f"  {cpu:5.2f} ms CPU/call"
    )
    if base is not None:
        text += f"   {rate / base[0]:4.0%} of {of} (by CPU/call {base[3] / cpu:4.0%})"
    return text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=os.path.abspath,
        help="also run (c) and (e) with api_service's code from DIR, in the same run, to"
        " compare a change before and after",
    )
    options = parser.parse_args()
    up_port, fwd_port, echo_port = free_port(), free_port(), free_port()
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(port), *extra)
        for code, port, extra in (
            (UPSTREAM, up_port, ()),
            (FORWARDER, fwd_port, ()),
            (FORWARDER, echo_port, ("echo",)),
        )
    ]
    _, forwarder, echo = children
    url = f"http://127.0.0.1:{up_port}/ok"
    forward, echo_address = f"127.0.0.1:{fwd_port}", f"127.0.0.1:{echo_port}"
    seconds, concurrency = options.seconds, options.concurrency
    load = (seconds, concurrency)
    runs: dict[str, list[Run]] = {name: [] for name in NAMES}
    try:
        for port in (up_port, fwd_port, echo_port):
            await wait_for_port(port)
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
            # PYTHONSAFEPATH keeps the working directory (this tree) off sys.path, so
            # DIR's packages shadow the installed ones.
            base = ServiceProcess(
                "api_service",
                {
                    **env,
                    "PACA_STATE_DIR": os.path.join(tmp, "baseline"),
                    "PACA_DB_ADDRESS": db_address,
                    "PYTHONPATH": options.baseline or "",
                    "PYTHONSAFEPATH": "1",
                },
            )
            try:
                api_address = (await api.start())["grpc"]
                assert api.proc is not None
                cached = await register_cached(api_address, url)
                base_pid, base_address = 0, ""
                if options.baseline:
                    base_address = (await base.start())["grpc"]
                    assert base.proc is not None
                    base_pid = base.proc.pid
                    await register_cached(base_address, url)
                print(
                    f"GET {url} at concurrency {concurrency}, {seconds:g} s x "
                    f"{options.rounds} rounds each, {len(os.sched_getaffinity(0))} cores; "
                    "CPU/call is the serving process's (all threads)"
                )
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=512)
                ) as session:

                    async def direct() -> None:
                        async with session.get(url) as response:
                            await response.read()

                    for round_number in range(options.rounds):
                        # Built as each turn comes, so a failed load leaves none unawaited.
                        loads: dict[str, tuple[int, Callable[[], Awaitable[Figures]]]] = {
                            DIRECT: (os.getpid(), lambda: measure(direct, seconds, concurrency)),
                            FORWARD: (forwarder.pid, lambda: grpc_load(forward, url, *load)),
                            API0: (base_pid, lambda: grpc_load(base_address, url, *load)),
                            API: (api.proc.pid, lambda: grpc_load(api_address, url, *load)),
                            ECHO: (echo.pid, lambda: grpc_load(echo_address, url, *load)),
                            CACHED0: (
                                base_pid,
                                lambda: grpc_load(base_address, url, *load, cached),
                            ),
                            CACHED: (
                                api.proc.pid,
                                lambda: grpc_load(api_address, url, *load, cached),
                            ),
                        }
                        order = list(loads)
                        if round_number % 2:  # the baseline goes second every other round
                            order = [DIRECT, FORWARD, API, API0, ECHO, CACHED, CACHED0]
                        for name in order:
                            pid, start = loads[name]
                            if not pid:
                                continue
                            run = await with_cpu(pid, start(), concurrency, seconds)
                            runs[name].append(run)
                            print(f"  round {round_number + 1} {line(name, run)}", flush=True)
            finally:
                await base.stop()
                await api.stop()
                await db.stop()
    finally:
        for child in children:
            if child.returncode is None:
                child.terminate()
                await child.wait()
    figures = {name: median(name_runs) for name, name_runs in runs.items() if name_runs}
    print("medians:")
    print(line(DIRECT, figures[DIRECT]))
    print(line(FORWARD, figures[FORWARD]))
    if API0 in figures:
        print(line(API0, figures[API0], figures[FORWARD], "(b)"))
    print(line(API, figures[API], figures[FORWARD], "(b)"))
    print(line(ECHO, figures[ECHO]))
    if CACHED0 in figures:
        print(line(CACHED0, figures[CACHED0], figures[ECHO], "(d)"))
    print(line(CACHED, figures[CACHED], figures[ECHO], "(d)"))


if __name__ == "__main__":
    asyncio.run(main())
