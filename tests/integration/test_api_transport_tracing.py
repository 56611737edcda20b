"""The transport's requests carry the trace context whichever of its two sessions sends them.

Under a parent whose client spans are dropped, a request skips the tracing hooks; it must still
send the caller's context on, exactly once, and leave no span. Under a sampled parent the hooks
make the client span whose id is sent.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from api_service.transport import HttpRequest, HttpTransport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


async def _sent(url: str, flags: TraceFlags, headers: list[tuple[str, str]]) -> list[str]:
    parent = NonRecordingSpan(SpanContext(TRACE_ID, PARENT_ID, is_remote=True, trace_flags=flags))
    transport = HttpTransport()
    await transport.open()
    token = context.attach(trace.set_span_in_context(parent))
    try:
        reply = await transport.send(HttpRequest("GET", url, headers, None, 10.0))
    finally:
        context.detach(token)
        await transport.aclose()
    sent: list[str] = json.loads(reply.body)
    return sent


async def test_an_unsampled_call_sends_its_context_once_and_makes_no_span(
    traceparent_echo_url: str, spans: InMemorySpanExporter
) -> None:
    stale = ("TraceParent", f"00-{1:032x}-{2:016x}-01")  # the caller's own, replaced
    sent = await _sent(
        traceparent_echo_url, TraceFlags(TraceFlags.DEFAULT), [stale, ("X-Other", "kept")]
    )
    assert sent == [f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-00"]
    assert not [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]


async def test_a_sampled_call_gets_a_client_span_whose_id_is_sent(
    traceparent_echo_url: str, spans: InMemorySpanExporter
) -> None:
    sent = await _sent(traceparent_echo_url, TraceFlags(TraceFlags.SAMPLED), [])
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert span.context is not None
    assert span.parent is not None
    assert span.parent.span_id == PARENT_ID
    assert sent == [f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01"]
