"""What tracing costs api_service: its throughput and CPU per call, tracing off beside on.

In one run against the same local upstream (its own process), with the call log written
through db_service as in production, api_service (its own process, with its own db_service)
runs with:

(a) tracing off: ``OTEL_SDK_DISABLED=true``, no span is made at all;
(b) every trace kept (``OTEL_TRACES_SAMPLER=parentbased_always_on``), spans exported through
    the batch processor over OTLP/gRPC to a local receiver (its own process, counting spans);
(c) the default sampler (no ``OTEL_TRACES_SAMPLER``), exported the same way.

The calls carry no trace context, so every trace starts in api_service and the sampler alone
decides; db_service runs with the same tracing settings as its api_service.

``--mode side-by-side`` (the default) runs the three at once, each loaded by its own share of
``--concurrency`` closed-loop workers, for ``--rounds`` windows of ``--seconds``: whatever else
the machine is doing hits all three alike, so the difference is tracing's. ``--mode turns``
loads one configuration at a time with all workers (each round starting with another one),
which shows the throughput of a lone process but moves with the neighbours' load between
turns. Each line shows the medians of the rounds and, for (b) and (c), the cost against (a),
the median of each round's own ratio: in throughput, in the CPU time api_service spends per
call (all its threads, the exporter's included), and what that CPU costs the throughput of a
saturated core (1 - CPU(a)/CPU(x)). On a shared machine the CPU figures are the steady ones:
the scheduler hands the processes uneven shares of the cores from one second to the next, and
their throughput follows. Last, the span work of one call is timed in this process alone (no
spans, unsampled spans, recorded and OTLP-encoded spans): the part of the cost that does not
depend on the neighbours.

    .venv/bin/python bench/tracing_overhead.py [--seconds 10] [--concurrency 64] [--rounds 3]
        [--mode side-by-side|turns]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence

import psutil
from api_call import grpc_load
from harness import UPSTREAM, free_port, wait_for_port
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from paca_runtime.stack import ServiceProcess
from paca_runtime.telemetry import make_provider

# An OTLP/gRPC trace receiver that counts spans and says how many on SIGTERM.
RECEIVER = """
import asyncio, signal, sys
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    spans = 0
    async def Export(self, request, context):
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                Receiver.spans += len(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

async def main():
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    print(Receiver.spans, flush=True)

asyncio.run(main())
"""

# calls/s, p50 ms, p99 ms, api_service CPU ms per call
Run = tuple[float, float, float, float]
OFF = "(a) tracing off"


def configs(otlp_endpoint: str) -> dict[str, dict[str, str]]:
    export = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    return {
        OFF: {"OTEL_SDK_DISABLED": "true"},
        "(b) every trace, OTLP export": {**export, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        "(c) default sampler, OTLP export": export,
    }


@contextlib.asynccontextmanager
async def serving(extra: dict[str, str]) -> AsyncIterator[tuple[str, psutil.Process]]:
    """db_service and api_service with ``extra`` in their environment: api_service's address
    and process."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PACA_STATE_DIR": tmp,
            "PACA_MONITOR_ADDRESS": "",
            "PACA_LOG_LEVEL": "WARNING",
            "PACA_DB_LISTEN": "127.0.0.1:0",
            "PACA_API_LISTEN": "127.0.0.1:0",
            **extra,
        }
        db = ServiceProcess("db_service", env)
        db_address = (await db.start())["grpc"]
        api = ServiceProcess("api_service", {**env, "PACA_DB_ADDRESS": db_address})
        try:
            address = (await api.start())["grpc"]
            assert api.proc is not None
            yield address, psutil.Process(api.proc.pid)
        finally:
            await api.stop()
            await db.stop()


async def loaded(
    address: str, process: psutil.Process, url: str, seconds: float, concurrency: int
) -> Run:
    """Load one api_service; its figures and the CPU it spent per call meanwhile."""
    before = process.cpu_times()
    rate, p50, p99 = await grpc_load(address, url, seconds, concurrency)
    after = process.cpu_times()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    calls = rate * seconds + concurrency  # the timed calls and the warm-up
    return rate, p50, p99, cpu_s / calls * 1000


def report(round_number: int, name: str, run: Run) -> None:
    print(
        f"  round {round_number + 1} {name:<34} {run[0]:6.0f} calls/s  {run[3]:5.2f} ms CPU/call",
        flush=True,
    )


async def side_by_side(
    runs_of: dict[str, dict[str, str]], url: str, options: argparse.Namespace
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in runs_of}
    share = max(1, options.concurrency // len(runs_of))
    async with contextlib.AsyncExitStack() as stack:
        served = [await stack.enter_async_context(serving(extra)) for extra in runs_of.values()]
        for round_number in range(options.rounds):
            results = await asyncio.gather(
                *(loaded(a, p, url, options.seconds, share) for a, p in served)
            )
            for name, run in zip(runs_of, results, strict=True):
                runs[name].append(run)
                report(round_number, name, run)
    return runs


async def turns(
    runs_of: dict[str, dict[str, str]], url: str, options: argparse.Namespace
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in runs_of}
    names = list(runs_of)
    for round_number in range(options.rounds):
        # Each round starts with another configuration, so none always runs first.
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            async with serving(runs_of[name]) as (address, process):
                run = await loaded(address, process, url, options.seconds, options.concurrency)
            runs[name].append(run)
            report(round_number, name, run)
    return runs


def span_work_us(provider: trace.TracerProvider, calls: int = 20000) -> float:
    """CPU microseconds of the span work of one call in this process, as api_service does it:
    a server span, the api.call span, an HTTP client span with its context sent along."""
    tracer = provider.get_tracer("bench")
    server_attributes = {"rpc.system": "grpc", "rpc.service": "s", "rpc.method": "Call"}
    started = time.process_time()
    for _ in range(calls):
        with tracer.start_as_current_span("/s/Call", kind=SpanKind.SERVER) as server:
            server.set_attributes(server_attributes)
            call = tracer.start_span("api.call", attributes={"http.request.method": "GET"})
            with trace.use_span(call, end_on_exit=True):
                http = tracer.start_span("GET", kind=SpanKind.CLIENT)
                token = context.attach(trace.set_span_in_context(http))
                propagate.inject({})
                context.detach(token)
                if http.is_recording():
                    http.set_attribute("url.full", "http://127.0.0.1:8080/ok")
                    http.set_attribute("http.response.status_code", 200)
                http.end()
    return (time.process_time() - started) / calls * 1e6


class _Encoding(SpanExporter):
    """Encodes spans as the OTLP exporter does before it sends them; sends nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


def span_work() -> None:
    """The per-call span work alone, free of the machine's noise: no spans, unsampled spans
    (what most calls cost at the default sampler), recorded and OTLP-encoded spans."""
    encoded = make_provider("bench", sampling.DEFAULT_ON)
    encoded.add_span_processor(SimpleSpanProcessor(_Encoding()))
    providers = {
        "tracing off (no-op)": trace.NoOpTracerProvider(),
        "unsampled (default, most calls)": make_provider(
            "bench", sampling.ParentBasedTraceIdRatio(0.0)
        ),
        "recorded and OTLP-encoded": encoded,
    }
    print("span work of one call in this process (CPU, median of 3):")
    for name, provider in providers.items():
        span_work_us(provider, 2000)  # warm up
        work = statistics.median(span_work_us(provider) for _ in range(3))
        print(f"  {name:<34} {work:6.1f} us")


def median(runs: list[Run]) -> Run:
    rate, p50, p99, cpu = zip(*runs, strict=True)
    return (
        statistics.median(rate),
        statistics.median(p50),
        statistics.median(p99),
        statistics.median(cpu),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("side-by-side", "turns"), default="side-by-side")
    options = parser.parse_args()
    up_port, otlp_port = free_port(), free_port()
    upstream = await asyncio.create_subprocess_exec(sys.executable, "-c", UPSTREAM, str(up_port))
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RECEIVER, str(otlp_port), stdout=asyncio.subprocess.PIPE
    )
    runs_of = configs(f"http://127.0.0.1:{otlp_port}")
    url = f"http://127.0.0.1:{up_port}/ok"
    try:
        await wait_for_port(up_port)
        await wait_for_port(otlp_port)
        print(
            f"GET {url} through api_service, {options.mode}, concurrency {options.concurrency}, "
            f"{options.seconds:g} s x {options.rounds} rounds, "
            f"{len(os.sched_getaffinity(0))} cores"
        )
        method = side_by_side if options.mode == "side-by-side" else turns
        runs = await method(runs_of, url, options)
    finally:
        upstream.terminate()
        await upstream.wait()
        receiver.terminate()
        exported, _ = await receiver.communicate()
    print("medians of the rounds; cost against (a) is the median of each round's own ratio")
    for name in runs_of:
        rate, p50, p99, cpu = median(runs[name])
        line = (
            f"{name:<34} {rate:6.0f} calls/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
            f"  {cpu:5.2f} ms CPU/call"
        )
        if name != OFF:
            pairs = list(zip(runs[name], runs[OFF], strict=True))
            throughput = statistics.median(1 - run[0] / off[0] for run, off in pairs)
            cpu_cost = statistics.median(run[3] / off[3] - 1 for run, off in pairs)
            capacity = statistics.median(1 - off[3] / run[3] for run, off in pairs)
            line += (
                f"  cost: throughput {throughput:6.1%}, CPU/call {cpu_cost:+6.1%}"
                f" (calls/s a saturated core loses: {capacity:.1%})"
            )
        print(line)
    print(f"spans received over OTLP: {exported.decode().strip() or '?'}")
    span_work()


if __name__ == "__main__":
    asyncio.run(main())
