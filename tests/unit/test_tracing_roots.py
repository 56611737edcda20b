"""Root spans decided by the tracer provider's sampler before the SDK is asked for them."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from paca_runtime.telemetry import make_provider

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def _sampled_by(sampler: sampling.Sampler, trace_id: int) -> bool:
    result = sampler.should_sample(None, trace_id, "root", trace.SpanKind.SERVER)
    return bool(result.decision.is_sampled())  # type: ignore[no-untyped-call]


def test_each_root_is_decided_once_on_the_trace_id_it_carries() -> None:
    sampler = sampling.ParentBasedTraceIdRatio(0.5)
    provider = make_provider("t", sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    roots = [tracer.start_span("root", kind=trace.SpanKind.SERVER) for _ in range(2000)]
    for root in roots:
        root.end()
    sampled = [
        root for root in roots if root.is_recording() or root.get_span_context().trace_flags.sampled
    ]
    # Decided twice on two ids, about a quarter would be kept instead of a half.
    assert 800 < len(sampled) < 1200
    for root in roots:
        context = root.get_span_context()
        assert context.is_valid
        assert _sampled_by(sampler, context.trace_id) == context.trace_flags.sampled
    finished = {span.context.trace_id for span in exporter.get_finished_spans() if span.context}
    assert finished == {root.get_span_context().trace_id for root in sampled}
    # Every root has a trace id of its own: a chosen id is taken once.
    assert len({root.get_span_context().trace_id for root in roots}) == len(roots)


def test_a_dropped_root_is_the_span_the_sdk_would_make() -> None:
    ours = make_provider("t", sampling.ParentBasedTraceIdRatio(0.0)).get_tracer("t")
    sdk = TracerProvider(sampler=sampling.ParentBasedTraceIdRatio(0.0)).get_tracer("t")
    made, expected = ours.start_span("root"), sdk.start_span("root")
    assert not made.is_recording()
    assert isinstance(made, trace.NonRecordingSpan)
    context, wanted = made.get_span_context(), expected.get_span_context()
    assert context.is_valid
    assert (context.trace_flags, context.trace_state, context.is_remote) == (
        wanted.trace_flags,
        wanted.trace_state,
        wanted.is_remote,
    )
    # What is sent on: the same trace, the sampled flag off.
    carrier: dict[str, str] = {}
    with trace.use_span(made):
        child = ours.start_span("child")
        assert child is made
        TraceContextTextMapPropagator().inject(carrier)
    _, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert int(trace_id, 16) == context.trace_id
    assert int(span_id, 16) == context.span_id
    assert not int(flags, 16) & trace.TraceFlags.SAMPLED


def test_roots_under_other_samplers() -> None:
    always = make_provider("t", sampling.ALWAYS_ON).get_tracer("t")
    kept = always.start_span("root")
    assert kept.is_recording()
    kept.end()
    never = make_provider("t", sampling.ALWAYS_OFF).get_tracer("t")
    dropped = never.start_span("root")
    assert not dropped.is_recording()
    assert dropped.get_span_context().is_valid
    # A remote sampled parent is followed: the SDK's span, in the parent's trace.
    parent = trace.NonRecordingSpan(
        trace.SpanContext(7, 9, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    ratio = make_provider("t", sampling.ParentBasedTraceIdRatio(0.0)).get_tracer("t")
    with trace.use_span(parent):
        child = ratio.start_span("server")
    assert child.is_recording()
    assert child.get_span_context().trace_id == 7
    child.end()
