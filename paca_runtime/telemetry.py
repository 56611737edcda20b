"""OpenTelemetry tracing: one provider per process, W3C trace context across gRPC and HTTP.

Spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (gRPC by default,
HTTP/protobuf when ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``) and dropped otherwise, so the
embedded default costs next to nothing. The standard ``OTEL_*`` variables (sampler, batch
delays) are honoured by the SDK itself.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

logger = logging.getLogger(__name__)


def _otlp_exporter() -> SpanExporter | None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and not os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcOTLPSpanExporter,
    )

    return GrpcOTLPSpanExporter()


def setup_tracing(service: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the process's tracer provider.

    Args:
        service: ``service.name`` of every span (``OTEL_SERVICE_NAME`` overrides it).
        exporter: Where spans go; by default OTLP when configured, else nowhere.
    """
    name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporter = exporter or _otlp_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        logger.info("exporting traces over OTLP", extra={"service_name": name})
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Flush pending spans; called once on process shutdown."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def grpc_server_interceptors() -> list[Any]:
    """Interceptors that open a server span per RPC, continuing the caller's trace.

    Health checks and reflection are left out: probes would otherwise flood the traces.
    """
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    skip = filters.any_of(
        filters.service_prefix("grpc.health."), filters.service_prefix("grpc.reflection.")
    )
    return [aio_server_interceptor(filter_=filters.negate(skip))]  # type: ignore[no-untyped-call]


def grpc_client_interceptors() -> list[Any]:
    """Interceptors that open a client span per RPC and send the trace context along."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
