"""HTTP client spans under a sampled and an unsampled parent, against a real aiohttp server."""

from __future__ import annotations

import aiohttp
import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from paca_runtime.http_spans import http_client_trace_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


async def _sent_traceparent(url: str, flags: TraceFlags) -> str:
    parent = NonRecordingSpan(SpanContext(TRACE_ID, PARENT_ID, is_remote=True, trace_flags=flags))
    token = context.attach(trace.set_span_in_context(parent))
    try:
        async with (
            aiohttp.ClientSession(trace_configs=[http_client_trace_config()]) as session,
            session.get(url) as reply,
        ):
            (sent,) = await reply.json()  # exactly one
            return str(sent)
    finally:
        context.detach(token)


async def test_an_unsampled_parent_gets_no_span_and_its_context_is_sent_on(
    traceparent_echo_url: str, spans: InMemorySpanExporter
) -> None:
    sent = await _sent_traceparent(traceparent_echo_url, TraceFlags(TraceFlags.DEFAULT))
    assert sent == f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-00"
    assert not [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]


async def test_a_sampled_parent_gets_a_client_span_whose_id_is_sent(
    traceparent_echo_url: str, spans: InMemorySpanExporter
) -> None:
    sent = await _sent_traceparent(traceparent_echo_url, TraceFlags(TraceFlags.SAMPLED))
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert span.context is not None
    assert span.parent is not None
    assert span.parent.span_id == PARENT_ID
    assert sent == f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01"
