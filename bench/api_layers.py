"""What api_service's call engine adds to an outbound call and to a cache hit, in this process.

No gRPC: the engine (``OutboundCaller``, through ``UniversalAPIClient``) runs in this event loop
against a local upstream (its own process), ``--concurrency`` callers at a time, each call under
an unsampled parent span and the server's tracer provider, as a call without trace context
runs in the server:

(a) aiohttp: ``ClientSession.get`` and ``read`` on a pool of its own, the floor of (b);
(b) ``OutboundCaller.call`` of a ``CallRequest`` for the same URL: resolve, guards, attempt,
    response, call record (spooled to a temporary directory here: no db_service), reply;
(c) ``OutboundCaller.call`` of a registered endpoint whose response is cached: a cache hit.

Each line is CPU microseconds per call (this process, all threads), the least of ``--rounds``
rounds: the steadiest figure on a shared machine. A gauge for changes to the engine, far
steadier than ``bench/api_call.py``'s throughput; inside a loaded server each costs more.

With ``--baseline DIR`` (a copy of an older tree), the same rounds run again in a child process
on DIR's code, and both are printed.

    .venv/bin/python bench/api_layers.py [--calls 6000] [--rounds 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from harness import UPSTREAM, cpu_per_call, free_port, report_layers, wait_for_port


@contextlib.asynccontextmanager
async def engine_calls(base: str) -> AsyncIterator[dict[str, Callable[[], Awaitable[None]]]]:
    """This gauge's three kinds of call against the upstream at ``base``, by their printed
    names, each under an unsampled parent span and the server's tracer provider, as a call
    without trace context runs in api_service."""
    # Imported here: with --baseline, the child imports them from the older tree.
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from paca.api.v1 import api_service_pb2, api_types_pb2

    from api_service import UniversalAPIClient
    from api_service.settings import ApiSettings, CallLogSettings
    from paca_runtime.telemetry import make_provider, sampler_from_env

    trace.set_tracer_provider(make_provider("bench", sampler_from_env()))
    url = f"{base}/ok"
    dropped = trace.NonRecordingSpan(
        trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(0))
    )
    token = otel_context.attach(trace.set_span_in_context(dropped))
    try:
        # Without db_service, records stay in memory or go to a spool: here, a temporary one.
        with tempfile.TemporaryDirectory() as spool:
            calllog = CallLogSettings(flush_interval_s=0.05, spool_dir=Path(spool) / "spool")
            settings = ApiSettings(db_address="", calllog=calllog)
            connector = aiohttp.TCPConnector(limit=512)
            async with (
                UniversalAPIClient(base, settings=settings) as client,
                aiohttp.ClientSession(connector=connector) as session,
            ):
                caller = client.caller
                endpoint = api_types_pb2.Endpoint(
                    name="bench.cached",
                    provider="bench",
                    base_url=base,
                    path="/ok",
                    cache=api_types_pb2.CachePolicy(enabled=True, override_upstream=True),
                )
                endpoint.cache.ttl.FromSeconds(3600)
                client.registry.register(endpoint)

                async def direct() -> None:
                    async with session.get(url) as response:
                        await response.read()

                async def call() -> None:
                    # A new message per call, as the server gets it.
                    request = api_service_pb2.CallRequest(url=url, provider="bench")
                    await caller.call(request, time_remaining_s=10.0)

                async def hit() -> None:
                    request = api_service_pb2.CallRequest(endpoint="bench.cached")
                    await caller.call(request, time_remaining_s=10.0)

                named: dict[str, Callable[[], Awaitable[None]]] = {
                    "(a) aiohttp get": direct,
                    "(b) OutboundCaller.call": call,
                    "(c) cache hit": hit,
                }
                for one in named.values():
                    await one()  # connections open, the cache filled
                yield named
    finally:
        otel_context.detach(token)


async def layers(calls: int, rounds: int, concurrency: int) -> dict[str, float]:
    port = free_port()
    upstream = await asyncio.create_subprocess_exec(sys.executable, "-c", UPSTREAM, str(port))
    try:
        await wait_for_port(port)
        async with engine_calls(f"http://127.0.0.1:{port}") as named:
            best = dict.fromkeys(named, float("inf"))
            for _ in range(rounds):
                for name, one in named.items():
                    best[name] = min(best[name], await cpu_per_call(one, calls, concurrency))
            return best
    finally:
        upstream.terminate()
        await upstream.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--baseline", metavar="DIR")
    parser.add_argument("--print-raw", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    # The upstream is on loopback, which the engine refuses unless allowed.
    os.environ["PACA_API_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    argv = [f"--calls={options.calls}", f"--rounds={options.rounds}"]
    argv.append(f"--concurrency={options.concurrency}")
    report_layers(
        __file__,
        layers(options.calls, options.rounds, options.concurrency),
        argv,
        baseline=options.baseline,
        print_raw=options.print_raw,
        title=f"{options.concurrency} callers; CPU us per call, least of {options.rounds}"
        f" rounds of {options.calls}",
        over_floor=lambda name: name.startswith("(b)"),
    )


if __name__ == "__main__":
    main()
