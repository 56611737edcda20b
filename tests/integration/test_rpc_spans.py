"""Server spans of every cardinality, their status, and none under an unsampled caller.

A real grpc.aio server with ``ServerSpans`` on a local socket; spans are read from an
in-memory exporter on the process's tracer provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from paca_runtime import semconv
from paca_runtime.rpc_spans import NETWORK_PEER_ADDRESS, ServerSpans, TracedHandlers
from paca_runtime.telemetry import make_provider

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


async def _requests(requests: AsyncIterator[bytes]) -> bytes:
    return b"".join([request async for request in requests])


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    # The trace the handler runs in, for the unsampled case.
    return trace.get_current_span().get_span_context().trace_id.to_bytes(16, "big")


async def unary_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request


async def stream_unary(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return await _requests(requests)


async def stream_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def written(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.write(request)
    await context.write(request)


async def broken_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield request
    await context.abort(grpc.StatusCode.INTERNAL, "half way")


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
    "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
    "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
    "Written": grpc.unary_stream_rpc_method_handler(written),
    "Broken": grpc.unary_stream_rpc_method_handler(broken_stream),
}


@pytest.fixture(params=["interceptor", "lookup"])
async def channel(request: pytest.FixtureRequest) -> AsyncIterator[grpc.aio.Channel]:
    """A server whose spans come from the interceptor, or from its handlers wrapped where the
    server looks them up (``TracedHandlers``, what ``GrpcServer`` does without interceptors)."""
    spans = ServerSpans()
    handlers: tuple[grpc.GenericRpcHandler, ...] = (
        grpc.method_handlers_generic_handler("t.Svc", HANDLERS),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": HANDLERS["Unary"]}),
    )
    if request.param == "interceptor":
        server = grpc.aio.server(interceptors=[spans], options=[("grpc.so_reuseport", 0)])
    else:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = tuple(TracedHandlers(handler, spans) for handler in handlers)
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            yield opened
    finally:
        await server.stop(0)


def _server_spans(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        if span.kind == SpanKind.SERVER:
            found.setdefault(span.name, []).append(span)
    return found


async def test_every_cardinality_gets_one_server_span_per_call(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    for _ in range(2):  # the second call goes through the cached wrapper
        assert len(await channel.unary_unary("/t.Svc/Unary")(b"x", timeout=5)) == 16
        assert [r async for r in channel.unary_stream("/t.Svc/UnaryStream")(b"x", timeout=5)] == [
            b"x"
        ] * 3
        assert await channel.stream_unary("/t.Svc/StreamUnary")(iter([b"a", b"b"]), timeout=5) == (
            b"ab"
        )
        replies = channel.stream_stream("/t.Svc/StreamStream")(iter([b"a", b"b"]), timeout=5)
        assert [r async for r in replies] == [b"a", b"b"]
        assert [r async for r in channel.unary_stream("/t.Svc/Written")(b"w", timeout=5)] == [
            b"w",
            b"w",
        ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in channel.unary_stream("/t.Svc/Broken")(b"x", timeout=5):
            pass
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)

    found = _server_spans(spans)
    assert "/grpc.health.v1.Health/Check" not in found  # probes make no spans
    for method in ("Unary", "UnaryStream", "StreamUnary", "StreamStream", "Written"):
        calls = found[f"/t.Svc/{method}"]
        assert len(calls) == 2
        for span in calls:
            attributes = span.attributes or {}
            assert attributes[semconv.RPC_SYSTEM] == "grpc"
            assert attributes[semconv.RPC_SERVICE] == "t.Svc"
            assert attributes[semconv.RPC_METHOD] == method
            assert attributes[semconv.RPC_GRPC_STATUS_CODE] == 0
            assert attributes[NETWORK_PEER_ADDRESS] == "127.0.0.1"
            assert span.status.status_code == StatusCode.UNSET
    (broken,) = found["/t.Svc/Broken"]
    assert (broken.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] == 13
    assert broken.status.status_code == StatusCode.ERROR
    assert "half way" not in (broken.status.description or "")


async def test_a_sampled_caller_is_the_parent_and_an_unsampled_one_gets_no_span(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    call = channel.unary_unary("/t.Svc/Unary")
    for flags in ("01", "00"):
        parent = f"00-{TRACE_ID:032x}-00f067aa0ba902b7-{flags}"
        reply = await call(b"", metadata=(("traceparent", parent),), timeout=5)
        # The handler runs in the caller's trace either way, so its own spans follow it.
        assert int.from_bytes(reply, "big") == TRACE_ID
    (span,) = _server_spans(spans)["/t.Svc/Unary"]
    assert span.context is not None
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7


async def traced(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    # What a call made by the handler would send on.
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "").encode()


@pytest.mark.parametrize("ratio", [0.0, 1.0])
async def test_a_root_call_is_sampled_once_and_its_children_follow(ratio: float) -> None:
    """With the services' provider: an unsampled root still sends a valid trace context on,
    the sampled flag off; a sampled one is the span exported, in the trace sent on."""
    provider = make_provider("t", sampling.ParentBasedTraceIdRatio(ratio))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server(
        interceptors=[ServerSpans(provider)], options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "t.Svc", {"Traced": grpc.unary_unary_rpc_method_handler(traced)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            sent = [
                (await channel.unary_unary("/t.Svc/Traced")(b"", timeout=5)).decode()
                for _ in range(3)
            ]
    finally:
        await server.stop(0)
    contexts = [propagate.extract({"traceparent": header}) for header in sent]
    sent_on = [trace.get_current_span(context).get_span_context() for context in contexts]
    assert all(context.is_valid for context in sent_on)
    assert len({context.trace_id for context in sent_on}) == 3  # a trace per call
    assert all(context.trace_flags.sampled == (ratio == 1.0) for context in sent_on)
    exported = [
        (span.context.trace_id, span.context.span_id)
        for span in exporter.get_finished_spans()
        if span.context is not None
    ]
    if ratio == 0.0:
        assert exported == []
    else:
        assert exported == [(context.trace_id, context.span_id) for context in sent_on]
