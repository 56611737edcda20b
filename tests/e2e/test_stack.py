"""The whole stack as real processes: health, the call path, the call log, one trace."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2

from tests.conftest import Upstream, eventually
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def count_logs(stack: Stack, where: str = "1=1") -> int:
    async with grpc.aio.insecure_channel(stack.address("db_service")) as channel:
        reply = await db_service_pb2_grpc.DbServiceStub(channel).Query(
            db_service_pb2.QueryRequest(
                sql=f"SELECT count(*) FROM external_api_logs WHERE {where}", read_only=True
            ),
            timeout=5,
        )
    return int(reply.rows[0].values[0].int64_value)


async def test_all_three_serve_health_and_the_monitor_sees_both_services(stack: Stack) -> None:
    names = {
        "api_service": "paca.api.v1.ApiService",
        "db_service": "paca.db.v1.DbService",
        "monitor": "paca.monitor.v1.MonitorService",
    }
    for module, service in names.items():
        async with grpc.aio.insecure_channel(stack.address(module)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (module, name)

    async with grpc.aio.insecure_channel(stack.address("monitor")) as channel:
        monitor = monitor_service_pb2_grpc.MonitorServiceStub(channel)

        async def both_up() -> bool:
            status = await monitor.GetStatus(monitor_service_pb2.GetStatusRequest(), timeout=5)
            up = {
                s.service for s in status.services if s.state == monitor_types_pb2.SERVICE_STATE_UP
            }
            return {"api_service", "db_service"} <= up

        await eventually(both_up)


async def test_call_log_reaches_db_and_survives_db_service_outage(
    stack: Stack, upstream: Upstream
) -> None:
    async with grpc.aio.insecure_channel(stack.address("api_service")) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)

        async def calls(n: int, tag: str) -> None:
            for i in range(n):
                reply = await api.Call(
                    api_service_pb2.CallRequest(
                        url=f"{upstream.url}/echo?i={i}", provider=f"p-{tag}"
                    ),
                    timeout=10,
                )
                assert reply.status_code == 200

        await calls(10, "before")

        async def before_stored() -> bool:
            return await count_logs(stack, "provider = 'p-before'") == 10

        await eventually(before_stored)

        db = stack.processes["db_service"]
        db_address = stack.address("db_service")
        assert await db.stop() == 0
        await calls(25, "during")  # db_service is down: calls still succeed
        await stack.start("db_service", PACA_DB_LISTEN=db_address)
        await calls(5, "after")

        async def all_stored() -> bool:
            return await count_logs(stack) == 40

        await eventually(all_stored, timeout_s=30)
        assert await count_logs(stack, "provider = 'p-during' AND success = 1") == 25

    # The outage really went through the spool: api_service reported spooled records.
    async with grpc.aio.insecure_channel(stack.address("monitor")) as channel:
        monitor = monitor_service_pb2_grpc.MonitorServiceStub(channel)

        async def spool_used_and_drained() -> bool:
            status = await monitor.GetStatus(monitor_service_pb2.GetStatusRequest(), timeout=5)
            figures = {
                m.name: m.counter or m.gauge
                for s in status.services
                if s.service == "api_service"
                for m in s.metrics
            }
            return figures.get("calllog_spooled_total", 0) >= 25 and (
                figures.get("calllog_spool_batches") == 0
            )

        await eventually(spool_used_and_drained)


async def test_one_trace_covers_client_api_upstream_and_db(
    stack: Stack, upstream: Upstream
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    interceptors = aio_client_interceptors(tracer_provider=provider)  # type: ignore[no-untyped-call]
    async with grpc.aio.insecure_channel(
        stack.address("api_service"), interceptors=interceptors
    ) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        with provider.get_tracer("test").start_as_current_span("client") as root:
            await api.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/echo"), timeout=10)
    trace_id = root.get_span_context().trace_id
    trace_hex = format(trace_id, "032x")
    assert trace_hex in upstream.seen_headers[-1]["traceparent"]
    client_span = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT)

    def ours(spans: list[tuple[str, trace_pb2.Span]]) -> list[tuple[str, trace_pb2.Span]]:
        return [(svc, s) for svc, s in spans if s.trace_id == trace_id.to_bytes(16, "big")]

    def complete(spans: list[tuple[str, trace_pb2.Span]]) -> bool:
        # Spans export as they end, in any order across processes: wait for the last ones.
        names = {(svc, s.name) for svc, s in ours(spans)}
        return {
            ("db_service", "/paca.db.v1.DbService/RecordApiCalls"),
            ("api_service", "calllog.flush"),
            ("api_service", "/paca.api.v1.ApiService/Call"),
        } <= names

    await stack.receiver.wait_for(complete, timeout_s=20)
    spans = {s.span_id: (svc, s) for svc, s in ours(stack.receiver.spans)}

    def find(service: str, name: str, parent: bytes) -> bytes:
        matches = [
            span_id
            for span_id, (svc, s) in spans.items()
            if svc == service and name in s.name and s.parent_span_id == parent
        ]
        assert matches, f"no {service} span {name!r} under {parent.hex()}: {_dump(spans)}"
        return matches[0]

    server = find("api_service", "ApiService/Call", client_span.context.span_id.to_bytes(8, "big"))
    call = find("api_service", "api.call", server)
    find("api_service", "GET", call)
    flush = find("api_service", "calllog.flush", call)
    db_client = find("api_service", "DbService/RecordApiCalls", flush)
    find("db_service", "DbService/RecordApiCalls", db_client)


def _dump(spans: dict[bytes, tuple[str, trace_pb2.Span]]) -> str:
    return "; ".join(
        f"{svc}:{s.name}:{s.span_id.hex()}<-{s.parent_span_id.hex()}" for svc, s in spans.values()
    )


async def test_sigterm_drains_in_flight_calls_then_every_service_exits_cleanly(
    stack: Stack, upstream: Upstream
) -> None:
    async with grpc.aio.insecure_channel(stack.address("api_service")) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        in_flight = asyncio.ensure_future(
            api.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/slow?s=1"), timeout=10)
        )
        await upstream.slow_started.wait()
        api_process = stack.processes["api_service"]
        api_process.signal(signal.SIGTERM)
        reply = await in_flight
        assert reply.body == b"late"
        assert await api_process.wait() == 0
    for module in ("db_service", "monitor"):
        assert await stack.processes[module].stop() == 0, module


async def test_local_stack_launcher_starts_all_three_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PACA_STATE_DIR": str(tmp_path),
        "PACA_MONITOR_LISTEN": "127.0.0.1:0",
        "PACA_METRICS_LISTEN": "127.0.0.1:0",
        "PACA_DB_LISTEN": "127.0.0.1:0",
        "PACA_API_LISTEN": "127.0.0.1:0",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paca_runtime.stack", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    listing: list[str] = []
    async with asyncio.timeout(60):
        async for raw in proc.stdout:
            line = raw.decode()
            if "is running" in line:
                for _ in range(3):
                    listing.append((await proc.stdout.readline()).decode())
                break
    assert [line.split()[0] for line in listing] == ["monitor", "db_service", "api_service"]
    api_address = listing[2].split("grpc ")[1].split(",")[0].strip()
    async with grpc.aio.insecure_channel(api_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="paca.api.v1.ApiService"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        await proc.stdout.read()
        assert await proc.wait() == 0
