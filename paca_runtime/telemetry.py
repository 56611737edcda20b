"""OpenTelemetry tracing: one provider per process, W3C trace context across gRPC and HTTP.

Spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (gRPC by default,
HTTP/protobuf when ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``) and dropped otherwise, so the
embedded default costs next to nothing. Batch delays and queue sizes (``OTEL_BSP_*``) are read
by the SDK. The sampler is named by the standard ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, read here rather than by the SDK for two reasons: a misspelt
sampler or a ratio outside [0, 1] stops the process with an error naming the variable (the SDK
would log a warning and sample everything), and the default is ours, not the SDK's
``parentbased_always_on``: ``parentbased_traceidratio`` at 0.05 (see ``DEFAULT_SAMPLER``).

Spans follow the OpenTelemetry semantic conventions (names in ``paca_runtime.semconv``): RPC
server spans come from ``paca_runtime.rpc_spans``, RPC client spans from the interceptors here,
HTTP client spans from ``paca_runtime.http_spans``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Final, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import Attributes

from paca_runtime.rpc_spans import ServerSpans
from paca_runtime.semconv import (
    SERVER_ADDRESS,
    SERVER_PORT,
    grpc_target_server,
)
from paca_runtime.settings import SettingsError

logger = logging.getLogger(__name__)

# Without OTEL_TRACES_SAMPLER: a caller's decision is followed (its sampled traces are
# complete across our services), and one in twenty traces that start here is kept. Keeping
# every one costs api_service some 35-55 % more CPU per call; the default some 3-16 %
# (bench/tracing_overhead.py, see DEVELOPERS.md).
DEFAULT_SAMPLER: Final = "parentbased_traceidratio"
DEFAULT_RATIO: Final = 0.05
_RATIO_SAMPLERS: Final = {
    "traceidratio": sampling.TraceIdRatioBased,
    "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio,
}
_FIXED_SAMPLERS: Final = {
    "always_on": sampling.ALWAYS_ON,
    "always_off": sampling.ALWAYS_OFF,
    "parentbased_always_on": sampling.DEFAULT_ON,
    "parentbased_always_off": sampling.DEFAULT_OFF,
}


def sampler_from_env(env: dict[str, str] | None = None) -> sampling.Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` (and ``OTEL_TRACES_SAMPLER_ARG``) name.

    Raises:
        SettingsError: An unknown sampler, or a ratio that is not a number in [0, 1].
    """
    env = dict(os.environ) if env is None else env
    name = env.get(OTEL_TRACES_SAMPLER, "").strip().lower()
    # The SDK's ratio is 1.0 when none is given; ours only when a ratio sampler was named.
    default_ratio = "1.0" if name else str(DEFAULT_RATIO)
    name = name or DEFAULT_SAMPLER
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    if name not in _RATIO_SAMPLERS:
        known = ", ".join(sorted([*_FIXED_SAMPLERS, *_RATIO_SAMPLERS]))
        raise SettingsError(f'"{OTEL_TRACES_SAMPLER}" must be one of {known}, got {name!r}')
    raw = env.get(OTEL_TRACES_SAMPLER_ARG, "").strip() or default_ratio
    try:
        ratio = float(raw)
    except ValueError:
        raise SettingsError(
            f'"{OTEL_TRACES_SAMPLER_ARG}" must be a ratio in [0, 1], got {raw!r}'
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise SettingsError(f'"{OTEL_TRACES_SAMPLER_ARG}" must be a ratio in [0, 1], got {raw!r}')
    return _RATIO_SAMPLERS[name](ratio)


def _otlp_exporter() -> SpanExporter | None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and not os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() or "grpc"
    if protocol not in ("grpc", "http/protobuf"):
        raise SettingsError(
            f'"OTEL_EXPORTER_OTLP_PROTOCOL" must be grpc or http/protobuf, got {protocol!r}'
        )
    if protocol == "http/protobuf":
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

    Raises:
        SettingsError: The sampler variables are wrong (see ``sampler_from_env``), or the OTLP
            protocol is neither ``grpc`` nor ``http/protobuf``.
    """
    name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = make_provider(name, sampler_from_env())
    exporter = exporter or _otlp_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        logger.info("exporting traces over OTLP", extra={"service_name": name})
    trace.set_tracer_provider(provider)
    return provider


def make_provider(service: str, sampler: sampling.Sampler) -> TracerProvider:
    """A tracer provider for ``service`` with ``sampler``, and no span processor yet."""
    resource = Resource.create({"service.name": service})
    return _Provider(
        resource=_HashedResource(resource.attributes, resource.schema_url),
        sampler=sampler,
        id_generator=_RootIds(),
    )


class _Provider(TracerProvider):
    """The SDK's provider, whose tracers decide cheaply about the spans they drop."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if isinstance(tracer, trace.NoOpTracer):
            return tracer
        ids = self.id_generator if isinstance(self.id_generator, _RootIds) else None
        return _Tracer(tracer, self.sampler, ids)


def dropped_below(parent: trace.Span) -> bool:
    """Whether the tracer provider's sampler drops any span started under ``parent``: the
    parent is valid, not sampled, and the sampler is parent-based (as ``sampler_from_env``
    builds them). Callers skip building such a span's attributes altogether."""
    if parent.is_recording():
        return False
    context = parent.get_span_context()
    if not context.is_valid or context.trace_flags & trace.TraceFlags.SAMPLED:
        return False
    provider = trace.get_tracer_provider()
    if provider is not _provider_seen[0]:  # the sampler of a provider never changes
        parent_based = isinstance(getattr(provider, "sampler", None), sampling.ParentBased)
        _provider_seen[:] = [provider, parent_based]
    return bool(_provider_seen[1])


# The tracer provider last asked about, and whether its sampler is parent-based.
_provider_seen: list[object] = [None, False]
# Classes of context values seen to be spans (an ABC's isinstance costs a lookup each time).
_SPAN_TYPES: set[type] = set()


def current_span(context: Context | None = None) -> trace.Span:
    """``trace.get_current_span(context)`` at a third of its cost, for the per-call paths:
    one read of the context and no ABC check for a class of span seen before."""
    span = (context if context is not None else otel_context.get_current()).get(_SPAN_KEY)
    if type(span) in _SPAN_TYPES:
        return cast(trace.Span, span)
    if span is None or not isinstance(span, trace.Span):
        return trace.INVALID_SPAN
    _SPAN_TYPES.add(type(span))
    return span


class _RootIds(RandomIdGenerator):
    """The SDK's random ids, but the next trace id can be chosen (per thread): a root span's
    sampling decision is made on its trace id before the SDK is asked for the span, which
    must then carry that id, or the decision would be made twice on two ids."""

    def __init__(self) -> None:
        self._chosen = threading.local()

    def choose_trace_id(self, trace_id: int) -> None:
        """Make ``trace_id`` (0: none) the next ``generate_trace_id()`` of this thread."""
        self._chosen.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._chosen, "trace_id", 0)
        if trace_id:
            self._chosen.trace_id = 0
            return trace_id
        return super().generate_trace_id()

    def draw_trace_id(self) -> int:
        """A new random trace id, never the chosen one (cheaper: no thread-local read)."""
        return super().generate_trace_id()


class _Tracer(trace.Tracer):
    """The SDK's tracer, but a span the sampler drops is not built by the SDK.

    Under a parent that was not sampled, with a parent-based sampler, no span is made: the
    parent is handed back. The sampler drops every such span, but the SDK still builds each
    one (a sampler call, a new span id, context objects) before it does, for every span of
    every unsampled call: most calls at the default sampler. The API's no-op tracer does the
    same as this; the trace context sent on is unchanged but for carrying the parent's span id.

    A root span (no valid parent: one per call that starts a trace) is decided by the sampler
    here, once, on a trace id drawn as the SDK draws it. When dropped, it is the non-recording
    span the SDK would make (that trace id, a new span id, the same flags and trace state),
    built without the SDK's per-span bookkeeping (a fifth less per root); when sampled, the
    SDK makes it on that same trace id (``_RootIds``), so the decision is the sampler's alone.
    """

    def __init__(self, tracer: trace.Tracer, sampler: sampling.Sampler, ids: _RootIds | None):
        self._tracer = tracer
        self._sampler = sampler
        self._ids = ids
        self._skip_children = isinstance(sampler, sampling.ParentBased)
        # The flags of a dropped root, as the SDK sets them (W3C level 2 random trace id).
        self._root_flags = trace.TraceFlags(
            trace.TraceFlags.RANDOM_TRACE_ID if ids is not None and ids.is_trace_id_random() else 0
        )
        self._root_bound = _root_ratio_bound(sampler)

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = current_span(context)
        parent_context = parent.get_span_context()
        ids = self._ids
        chosen = False
        if not parent_context.is_valid and ids is not None:
            trace_id = ids.draw_trace_id()
            bound = self._root_bound
            if bound is not None and trace_id & _TRACE_ID_LIMIT >= bound:
                # The ratio sampler's own test, without its result objects: dropped.
                span_context = trace.SpanContext(
                    trace_id, ids.generate_span_id(), False, self._root_flags
                )
                return trace.NonRecordingSpan(span_context)
            result = self._sampler.should_sample(
                context, trace_id, name, kind, attributes, links or ()
            )
            if not result.decision.is_recording():  # type: ignore[no-untyped-call]
                span_context = trace.SpanContext(
                    trace_id, ids.generate_span_id(), False, self._root_flags, result.trace_state
                )
                return trace.NonRecordingSpan(span_context)
            ids.choose_trace_id(trace_id)
            chosen = True
        elif (
            self._skip_children
            and parent_context.is_valid
            and not parent_context.trace_flags.sampled
            and not parent.is_recording()
        ):
            return parent
        try:
            return self._tracer.start_span(
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        finally:
            if chosen and ids is not None:
                ids.choose_trace_id(0)  # not taken when the SDK made no span

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


# The bits of a trace id that the ratio sampler compares with its bound.
_TRACE_ID_LIMIT: Final = sampling.TraceIdRatioBased.TRACE_ID_LIMIT


def _root_ratio_bound(sampler: sampling.Sampler) -> int | None:
    """The bound under which ``sampler`` samples a root span's trace id, when it is the
    parent-based ratio sampler (the default, see ``sampler_from_env``); None otherwise."""
    if type(sampler) is not sampling.ParentBasedTraceIdRatio:
        return None
    root = getattr(sampler, "_root", None)  # the SDK keeps it private; absent: no shortcut
    if type(root) is not sampling.TraceIdRatioBased:
        return None
    return root.bound


class _HashedResource(Resource):
    """A Resource that computes its hash once. The OTLP encoder groups spans by resource,
    hashing it for every span exported, and the SDK's hash serialises every attribute to JSON
    each time: a tenth of the cost of exporting a span."""

    def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def shutdown_tracing() -> None:
    """Flush pending spans; called once on process shutdown."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def grpc_server_interceptors() -> list[Any]:
    """Interceptors that open a server span per RPC, continuing the caller's trace (health
    checks and reflection left out; see ``paca_runtime.rpc_spans``)."""
    return [ServerSpans()]


def grpc_client_interceptors(target: str = "") -> list[Any]:
    """Interceptors that open a client span per RPC and send the trace context along.

    Args:
        target: The channel's target; its host and port become ``server.address`` and
            ``server.port`` of every client span (the instrumentation does not know them).
    """
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    address, port = grpc_target_server(target) if target else ("", None)
    attributes: dict[str, str | int] = {SERVER_ADDRESS: address} if address else {}
    if port is not None:
        attributes[SERVER_PORT] = port

    def on_request(span: trace.Span, request: Any) -> None:
        if attributes and span.is_recording():
            span.set_attributes(attributes)

    return list(aio_client_interceptors(request_hook=on_request))  # type: ignore[no-untyped-call]
