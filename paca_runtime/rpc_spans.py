"""gRPC server spans: one SERVER span per RPC, continuing the caller's W3C trace context.

Each span is named after the full method (``/package.Service/Method``) and carries
``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code`` and the peer's
``network.peer.address`` and ``network.peer.port``. The status is an error only for the
server's faults (``SERVER_FAULTS``), however the RPC ended: ``abort``, ``abort_with_status``,
``set_code``, or an unhandled exception (UNKNOWN to the caller). Exception messages are never
recorded: they can quote what the caller sent.

Written here rather than taken from opentelemetry-instrumentation-grpc, whose aio server
interceptor wraps every handler again on every call, parses the peer and copies the metadata
before it knows whether the span is sampled, and misses ``abort_with_status`` and unhandled
errors (a second interceptor had to record those). This one wraps each method's handler once,
and under a span that is not recorded does no more than attach the trace context, so that
the RPC's own spans follow the same sampling decision.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from paca_runtime.semconv import RPC_GRPC_STATUS_CODE, RPC_METHOD, RPC_SERVICE, RPC_SYSTEM

# Probes and tooling: no spans for these.
UNTRACED_SERVICES: Final = ("grpc.health.", "grpc.reflection.")
_UNTRACED_PATHS: Final = tuple(f"/{service}" for service in UNTRACED_SERVICES)
# Status codes that make a server span an error: the server's faults. The others (bad
# argument, not found, ...) are the caller's, and only its client span is an error.
SERVER_FAULTS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
# Metadata keys the W3C propagators read; a call without any of them has no remote parent.
_PROPAGATED: Final = frozenset({"traceparent", "tracestate", "baggage"})
_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}

tracer = trace.get_tracer(__name__)


def record_server_status(span: trace.Span, code: grpc.StatusCode) -> None:
    """Put ``code`` on the (recording) server ``span``, an error status when it is a server
    fault. The description is the code's name only: details are written for the caller."""
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code.name))


class _SpanContext:
    """A servicer context that records on the span how the handler ended the RPC."""

    __slots__ = ("_context", "_span", "ended")

    def __init__(self, context: grpc.aio.ServicerContext, span: trace.Span) -> None:
        self._context = context
        self._span = span
        self.ended = False  # a status was recorded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def _record(self, code: grpc.StatusCode) -> None:
        self.ended = True
        record_server_status(self._span, code)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        self._record(code)
        await self._context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> None:
        self._record(_CODES.get(status.code.value[0], grpc.StatusCode.UNKNOWN))
        await self._context.abort_with_status(status)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._record(code)
        self._context.set_code(code)


def _peer(context: grpc.aio.ServicerContext) -> dict[str, str | int]:
    # ipv4:127.0.0.1:5000, ipv6:[::1]:5000, or unix:/path (no port)
    kind, _, rest = (context.peer() or "").partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {NETWORK_PEER_ADDRESS: rest} if rest else {}
    host, _, port = rest.split(",", 1)[0].rpartition(":")
    if not port.isdigit():
        return {}
    return {NETWORK_PEER_ADDRESS: host.strip("[]"), NETWORK_PEER_PORT: int(port)}


class _Call:
    """One RPC's span: started from the caller's context, current while the handler runs."""

    __slots__ = ("context", "span", "token")

    def __init__(
        self,
        tracer: trace.Tracer,
        method: str,
        attributes: dict[str, str],
        context: grpc.aio.ServicerContext,
    ) -> None:
        parent = None
        metadata = context.invocation_metadata()
        if metadata:
            carrier = {key: value for key, value in metadata if key in _PROPAGATED}
            if carrier:
                parent = propagate.extract(carrier)
        span = tracer.start_span(method, parent, SpanKind.SERVER, attributes)
        self.span = span
        self.token = otel_context.attach(trace.set_span_in_context(span, parent))
        self.context: grpc.aio.ServicerContext | _SpanContext = context
        if span.is_recording():
            span.set_attributes(_peer(context))
            self.context = _SpanContext(context, span)

    def failed(self, error: BaseException) -> None:
        if isinstance(self.context, _SpanContext) and not self.context.ended:
            if isinstance(error, grpc.aio.AbortError):
                return  # recorded by abort
            unhandled = isinstance(error, Exception)
            record_server_status(
                self.span, grpc.StatusCode.UNKNOWN if unhandled else grpc.StatusCode.CANCELLED
            )
            self.context.ended = True

    def end(self) -> None:
        if isinstance(self.context, _SpanContext) and not self.context.ended:
            self.span.set_attribute(RPC_GRPC_STATUS_CODE, 0)
        otel_context.detach(self.token)
        self.span.end()


Behavior = Callable[[Any, Any], Any]


def _unary(
    tracer: trace.Tracer, method: str, attributes: dict[str, str], behavior: Behavior
) -> Behavior:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(tracer, method, attributes, context)
        try:
            return await behavior(request, call.context)
        except BaseException as error:
            call.failed(error)
            raise
        finally:
            call.end()

    return unary


def _streaming(
    tracer: trace.Tracer, method: str, attributes: dict[str, str], behavior: Behavior
) -> Behavior:
    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(tracer, method, attributes, context)
        try:
            responses = behavior(request, call.context)
            if hasattr(responses, "__aiter__"):
                # Closed here, in this task, when the caller goes away: left to the garbage
                # collector, the handler's generator would be finalised in another context,
                # where its context variables cannot be reset.
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        yield response
            else:  # a handler that sends with context.write() and returns nothing
                await responses
        except BaseException as error:
            call.failed(error)
            raise
        finally:
            call.end()

    return streaming


# (request streaming, response streaming) -> the handler's behaviour attribute and factory
_HANDLER_KINDS: Final = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class ServerSpans(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Makes the server span of every RPC but health checks and reflection (probes would
    flood the traces). As an interceptor it must come first in the chain, so that the span
    covers the others; with no other interceptor, a server can wrap its handlers as it finds
    them instead (:class:`TracedHandlers`), which skips grpc.aio's interceptor machinery.

    Args:
        tracer_provider: Where the spans are made; by default the process's (as it is when
            each call comes, so it may be set after this is made).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = tracer if tracer_provider is None else tracer_provider.get_tracer(__name__)
        # The last handler seen per method and its wrapper: a servicer's handlers do not
        # change, so each is wrapped once rather than on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return self.traced(handler_call_details.method or "", handler)

    def traced(
        self, method: str, handler: grpc.RpcMethodHandler | None
    ) -> grpc.RpcMethodHandler | None:
        """``handler`` of ``method`` made to run under the RPC's server span (once per
        handler); as it is for health checks, reflection and unknown methods (None)."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler is None or method.startswith(_UNTRACED_PATHS):
            return handler
        service, _, name = method.lstrip("/").partition("/")
        attributes = {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name}
        attribute, factory = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        wrap = _streaming if handler.response_streaming else _unary
        traced = factory(
            wrap(self._tracer, method, attributes, getattr(handler, attribute)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, traced)
        return traced


class TracedHandlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods run under ``spans``' server spans: the work of the
    ``ServerSpans`` interceptor, done where the server looks the method up."""

    def __init__(self, handlers: grpc.GenericRpcHandler, spans: ServerSpans) -> None:
        self._handlers = handlers
        self._spans = spans

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self._spans.traced(
            handler_call_details.method or "", self._handlers.service(handler_call_details)
        )
