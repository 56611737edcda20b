"""Spans reach an OTLP/HTTP receiver too (``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``), and a
protocol the exporters do not speak stops the service with the variable named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc

from tests.conftest import Upstream
from tests.e2e.conftest import OtlpReceiver, Stack, refused_start
from tests.e2e.test_trace_semconv import Received, in_trace, traced_client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture
async def http_receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    """An OTLP/HTTP endpoint (POST /v1/traces, protobuf) feeding the same span collector."""
    receiver = OtlpReceiver()

    async def export(request: web.Request) -> web.Response:
        message = trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read())
        await receiver.Export(message, None)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield receiver, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_spans_are_exported_over_otlp_http(
    tmp_path: Path, http_receiver: tuple[OtlpReceiver, str], upstream: Upstream
) -> None:
    receiver, endpoint = http_receiver
    stack = Stack(
        tmp_path,
        {
            "PACA_STATE_DIR": str(tmp_path),
            "PACA_API_LISTEN": "127.0.0.1:0",
            "PACA_MONITOR_ADDRESS": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
        receiver,
    )
    try:
        await stack.start("api_service")
        provider, _ = traced_client()
        interceptors = aio_client_interceptors(tracer_provider=provider)  # type: ignore[no-untyped-call]
        async with grpc.aio.insecure_channel(
            stack.address("api_service"), interceptors=interceptors
        ) as channel:
            with provider.get_tracer("test").start_as_current_span("client") as root:
                await api_service_pb2_grpc.ApiServiceStub(channel).Call(
                    api_service_pb2.CallRequest(url=f"{upstream.url}/echo"), timeout=10
                )
        trace_id = root.get_span_context().trace_id

        def arrived(spans: Received) -> bool:
            names = {s.name for svc, s in in_trace(spans, trace_id) if svc == "api_service"}
            return {"/paca.api.v1.ApiService/Call", "api.call", "GET"} <= names

        await receiver.wait_for(arrived, timeout_s=20)
    finally:
        await stack.stop_all()


async def test_an_unknown_otlp_protocol_stops_the_service_with_the_variable_named(
    tmp_path: Path,
) -> None:
    stderr = await refused_start(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        },
    )
    assert b'"OTEL_EXPORTER_OTLP_PROTOCOL" must be grpc or http/protobuf' in stderr
