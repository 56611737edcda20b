"""The real stack: monitor, db_service and api_service as processes, as ``make run`` starts them.

Ports are 0 (the OS picks free ones) and each process tells its addresses on its ready line.
Spans are exported over OTLP to a receiver running inside the test.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from paca_runtime.stack import ServiceProcess


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects exported spans with the service that sent them."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self.arrived = asyncio.Event()

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope_spans.spans)
        self.arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, trace_pb2.Span]]], bool], timeout_s: float
    ) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate(self.spans):
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    receiver: OtlpReceiver
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def address(self, module: str) -> str:
        return self.processes[module].addresses["grpc"]

    async def start(self, module: str, **env: str) -> ServiceProcess:
        process = ServiceProcess(module, {**self.env, **env})
        await process.start()
        self.processes[module] = process
        return process

    async def stop_all(self) -> None:
        for module in ("api_service", "db_service", "monitor"):
            if module in self.processes:
                await self.processes[module].stop()


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def stack(tmp_path: Path, otlp_receiver: tuple[OtlpReceiver, str]) -> AsyncIterator[Stack]:
    receiver, endpoint = otlp_receiver
    env = {
        "PACA_STATE_DIR": str(tmp_path),
        "PACA_LOG_FORMAT": "json",
        "PACA_MONITOR_LISTEN": "127.0.0.1:0",
        "PACA_METRICS_LISTEN": "127.0.0.1:0",
        "PACA_DB_LISTEN": "127.0.0.1:0",
        "PACA_API_LISTEN": "127.0.0.1:0",
        "MONITOR_INTERVAL": "0.5",
        "PACA_CALLLOG_FLUSH_INTERVAL_S": "0.05",
        "PACA_SHUTDOWN_GRACE_S": "3",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        # Every trace, also those that start in a service (webhook intake); the default keeps
        # one in twenty.
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    running = Stack(tmp_path, env, receiver)
    try:
        monitor = await running.start("monitor")
        running.env["PACA_MONITOR_ADDRESS"] = monitor.addresses["grpc"]
        db = await running.start("db_service")
        running.env["PACA_DB_ADDRESS"] = db.addresses["grpc"]
        await running.start("api_service")
        yield running
    finally:
        await running.stop_all()


async def refused_start(tmp_path: Path, env: dict[str, str]) -> bytes:
    """Start api_service with ``env`` (settings it must refuse); its standard error, after
    checking that it stopped with status 2, the code of invalid settings."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api_service",
        env={
            "PATH": "/usr/bin:/bin",
            "PACA_STATE_DIR": str(tmp_path),
            "PACA_API_LISTEN": "127.0.0.1:0",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 2
    return stderr
