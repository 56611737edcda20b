"""The span tree that reaches an OTLP receiver from the real processes follows the semantic
conventions: client → api_service (RPC server) → HTTP client, and → call-log flush → RPC client
→ db_service (RPC server) → DB client; the sampler is the one the environment names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc

from tests.conftest import Upstream
from tests.e2e.conftest import OtlpReceiver, Stack, refused_start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SECRET = "s3cr3t"
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
ERROR = trace_pb2.Status.STATUS_CODE_ERROR
Received = list[tuple[str, trace_pb2.Span]]
_CALL = "/paca.api.v1.ApiService/Call"


def value(any_value: common_pb2.AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(span: trace_pb2.Span) -> dict[str, Any]:
    return {a.key: value(a.value) for a in span.attributes}


def in_trace(spans: Received, trace_id: int) -> Received:
    wanted = trace_id.to_bytes(16, "big")
    return [(svc, s) for svc, s in spans if s.trace_id == wanted]


class Tree:
    """The spans of one trace, by id, to walk from parent to child."""

    def __init__(self, spans: Received) -> None:
        self.spans = {s.span_id: (svc, s) for svc, s in spans}

    def child(self, parent: bytes, service: str, name: str) -> trace_pb2.Span:
        found = [
            s
            for svc, s in self.spans.values()
            if svc == service and s.name == name and s.parent_span_id == parent
        ]
        assert found, f"no {service} span {name!r} under {parent.hex()}: {self.dump()}"
        return found[0]

    def dump(self) -> str:
        return "; ".join(
            f"{svc}:{s.name}:{s.span_id.hex()}<-{s.parent_span_id.hex()}"
            for svc, s in self.spans.values()
        )


def traced_client() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_span_tree_carries_rpc_http_and_db_conventions_and_no_secret(
    stack: Stack, upstream: Upstream
) -> None:
    provider, exporter = traced_client()
    interceptors = aio_client_interceptors(tracer_provider=provider)  # type: ignore[no-untyped-call]
    async with grpc.aio.insecure_channel(
        stack.address("api_service"), interceptors=interceptors
    ) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        with provider.get_tracer("test").start_as_current_span("client") as root:
            reply = await api.Call(
                api_service_pb2.CallRequest(url=f"{upstream.url}/echo/e2e?api_key={SECRET}&n=1"),
                timeout=10,
            )
    assert reply.status_code == 200
    trace_id = root.get_span_context().trace_id

    def complete(spans: Received) -> bool:
        # Spans export as they end, in any order across processes: wait for the last ones.
        names = {(svc, s.name) for svc, s in in_trace(spans, trace_id)}
        return {
            ("api_service", _CALL),
            ("api_service", "calllog.flush"),
            ("api_service", "/paca.db.v1.DbService/RecordApiCalls"),
            ("db_service", "/paca.db.v1.DbService/RecordApiCalls"),
            ("db_service", "INSERT external_api_logs"),
        } <= names

    await stack.receiver.wait_for(complete, timeout_s=20)
    received = in_trace(stack.receiver.spans, trace_id)
    tree = Tree(received)
    client_rpc = next(s for s in exporter.get_finished_spans() if s.name == _CALL)
    server = tree.child(client_rpc.context.span_id.to_bytes(8, "big"), "api_service", _CALL)
    assert server.kind == SERVER
    assert {
        "rpc.system": "grpc",
        "rpc.service": "paca.api.v1.ApiService",
        "rpc.method": "Call",
        "rpc.grpc.status_code": 0,
    }.items() <= attributes(server).items()

    call = tree.child(server.span_id, "api_service", "api.call")
    http = tree.child(call.span_id, "api_service", "GET")
    port = int(upstream.url.rpartition(":")[2])
    assert http.kind == CLIENT
    assert {
        "http.request.method": "GET",
        "url.full": f"{upstream.url}/echo/e2e?api_key=REDACTED&n=1",
        "server.address": "127.0.0.1",
        "server.port": port,
        "http.response.status_code": 200,
    }.items() <= attributes(http).items()

    flush = tree.child(call.span_id, "api_service", "calllog.flush")
    record = tree.child(flush.span_id, "api_service", "/paca.db.v1.DbService/RecordApiCalls")
    db_host, _, db_port = stack.address("db_service").rpartition(":")
    assert record.kind == CLIENT
    assert {
        "rpc.system": "grpc",
        "rpc.service": "paca.db.v1.DbService",
        "rpc.method": "RecordApiCalls",
        "server.address": db_host,
        "server.port": int(db_port),
        "rpc.grpc.status_code": 0,
    }.items() <= attributes(record).items()

    db_server = tree.child(record.span_id, "db_service", "/paca.db.v1.DbService/RecordApiCalls")
    assert db_server.kind == SERVER
    write = tree.child(db_server.span_id, "db_service", "INSERT external_api_logs")
    assert write.kind == CLIENT
    written = attributes(write)
    assert written["db.system.name"] == "sqlite"
    assert str(written["db.namespace"]).endswith(".db")
    assert written["db.operation.name"] == "INSERT"
    assert "?" in str(written["db.query.text"])
    assert "paca.database" in written

    # Anything of the secret, anywhere: names, attributes, events, status messages.
    assert SECRET.encode() not in b"".join(s.SerializeToString() for _, s in received)


async def test_sampler_from_the_environment_decides_what_is_exported(
    tmp_path: Path, otlp_receiver: tuple[OtlpReceiver, str], upstream: Upstream
) -> None:
    receiver, endpoint = otlp_receiver
    stack = Stack(
        tmp_path,
        {
            "PACA_STATE_DIR": str(tmp_path),
            "PACA_API_LISTEN": "127.0.0.1:0",
            "PACA_MONITOR_ADDRESS": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            # New traces are never sampled; a caller's sampled trace is continued.
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0",
        },
        receiver,
    )
    try:
        await stack.start("api_service")
        provider, _ = traced_client()
        interceptors = aio_client_interceptors(tracer_provider=provider)  # type: ignore[no-untyped-call]
        async with (
            grpc.aio.insecure_channel(stack.address("api_service")) as plain,
            grpc.aio.insecure_channel(
                stack.address("api_service"), interceptors=interceptors
            ) as traced,
        ):
            request = api_service_pb2.CallRequest(url=f"{upstream.url}/echo")
            await api_service_pb2_grpc.ApiServiceStub(plain).Call(request, timeout=10)
            with provider.get_tracer("test").start_as_current_span("client") as root:
                await api_service_pb2_grpc.ApiServiceStub(traced).Call(request, timeout=10)
        trace_id = root.get_span_context().trace_id

        def continued(spans: Received) -> bool:
            return any(s.name == _CALL for _, s in in_trace(spans, trace_id))

        await receiver.wait_for(continued, timeout_s=20)
        # The untraced call ended first, so its spans would have been exported by now.
        other = {s.trace_id for _, s in receiver.spans} - {trace_id.to_bytes(16, "big")}
        assert other == set()
    finally:
        await stack.stop_all()


async def test_a_misspelt_sampler_stops_the_service_with_the_variable_named(
    tmp_path: Path,
) -> None:
    stderr = await refused_start(tmp_path, {"OTEL_TRACES_SAMPLER": "parentbased_sometimes"})
    assert b'"OTEL_TRACES_SAMPLER" must be one of' in stderr
