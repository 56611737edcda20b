"""The trace context a request under a dropped parent sends is what the propagators would send.

The transport writes the default propagators' headers itself (W3C trace context); whatever it
cannot write the same way (baggage, another propagator) goes through ``propagate.inject``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from api_service.transport import _with_trace_context

pytestmark = pytest.mark.unit

PARENT = NonRecordingSpan(
    SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(0))
)


def _expected(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*(h for h in headers if h[0].lower() not in carrier), *carrier.items()]


@pytest.fixture
def under_parent() -> Iterator[None]:
    token = context.attach(trace.set_span_in_context(PARENT))
    try:
        yield
    finally:
        context.detach(token)


@pytest.mark.parametrize(
    "headers", [[], [("X-Other", "kept"), ("TraceParent", f"00-{1:032x}-{2:016x}-01")]]
)
def test_trace_context_is_what_inject_writes(
    under_parent: None, headers: list[tuple[str, str]]
) -> None:
    sent = _with_trace_context(headers, PARENT)
    assert sent == _expected(headers)
    assert ("traceparent", f"00-{0x4BF92F3577B34DA6A3CE929D0E0E4736:032x}-00f067aa0ba902b7-00") in (
        sent
    )


def test_trace_state_and_baggage_are_sent_as_inject_writes_them() -> None:
    state = TraceState([("vendor", "value")])
    span = NonRecordingSpan(SpanContext(7, 9, True, TraceFlags(0), trace_state=state))
    ctx = baggage.set_baggage("user", "a b", trace.set_span_in_context(span))
    token = context.attach(ctx)
    try:
        sent = _with_trace_context([], span)
        assert sent == _expected([])
    finally:
        context.detach(token)
    assert dict(sent)["tracestate"] == "vendor=value"
    assert "baggage" in dict(sent)


def test_another_global_propagator_is_used_as_configured(under_parent: None) -> None:
    class Custom(TextMapPropagator):
        def extract(self, carrier, context=None, getter=None):  # type: ignore[no-untyped-def]
            return context

        def inject(self, carrier, context=None, setter=None):  # type: ignore[no-untyped-def]
            carrier["x-custom"] = "1"

        @property
        def fields(self) -> set[str]:
            return {"x-custom"}

    default = propagate.get_global_textmap()
    for textmap in (Custom(), TraceContextTextMapPropagator()):
        propagate.set_global_textmap(textmap)
        try:
            assert _with_trace_context([("A", "b")], PARENT) == _expected([("A", "b")])
        finally:
            propagate.set_global_textmap(default)
