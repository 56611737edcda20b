"""The shortcuts of the call path keep the answers of the long way round.

Each per-call shortcut (a remembered verdict, a skipped parse, a cheaper id) is checked here
against what it replaces, so a later change to either side shows up as a failure.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.trace import SpanContext, TraceFlags
from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.attempts import Exchange
from api_service.cache import ResponseCache
from api_service.caller import OutboundCaller
from api_service.callrecord import http_verdict, is_json, json_text, public_url, record_id
from api_service.errors import ForbiddenTarget, InvalidCall
from api_service.redirects import DEFAULT_RULE, RedirectRule, redirect_rule
from api_service.registry import APIRegistry
from api_service.replies import set_latency
from api_service.request import Target, resolve
from api_service.safety import NetworkPolicy, parse_networks
from api_service.stats import TargetStats
from api_service.transport import HttpRequest, HttpResponse, HttpTransport
from paca_runtime.redact import REDACTED, redact_url
from paca_runtime.trace_headers import outbound_trace_headers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

URLS = [
    "http://127.0.0.1:8080/ok",
    "https://api.example.com/v1/items/42",
    "https://api.example.com/v1/items?page=2",
    "https://api.example.com/v1/items?api_key=s3cret&page=2",
    "https://user:pass@api.example.com/x",
    "https://user@api.example.com/x",
    "http://[::1]:8080/x",
    "http://[::1/x",
    "http://exa\uff1fmple.com/x",
    "https://api.example.com/p#token=not-a-query",
    "sqlite:////abs/path",
]


@pytest.mark.parametrize("url", URLS)
def test_public_url_is_redact_url(url: str) -> None:
    assert public_url(url) == redact_url(url)


def test_public_url_still_redacts_secrets() -> None:
    assert public_url("https://a.example/x?token=t0k3n") == f"https://a.example/x?token={REDACTED}"


def test_record_ids_are_distinct_random_uuids() -> None:
    ids = [record_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def _key_as_first_written(request: HttpRequest, policy: api_types_pb2.CachePolicy) -> str:
    # Keys are shared through Redis by every replica: a new digest would orphan their entries.
    digest = hashlib.sha256()
    headers = {name.lower(): value for name, value in reversed(request.headers)}
    for part in (request.method, request.url, headers.get("authorization", "")):
        digest.update(part.encode())
        digest.update(b"\0")
    for name in sorted(h.lower() for h in policy.vary_headers):
        digest.update(f"{name}={headers.get(name, '')}\0".encode())
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("headers", "vary"),
    [
        ([], []),
        ([("Authorization", "Bearer a"), ("Accept", "text/plain")], ["Accept", "X-Missing"]),
        ([("accept", "é/ü")], ["ACCEPT"]),
    ],
)
def test_cache_keys_keep_their_digest(headers: list[tuple[str, str]], vary: list[str]) -> None:
    request = HttpRequest("GET", "https://api.example.com/x?q=1", headers, None, 1.0)
    policy = api_types_pb2.CachePolicy(enabled=True, vary_headers=vary)
    assert ResponseCache.key(request, policy) == _key_as_first_written(request, policy)


def test_check_url_remembers_verdicts_and_still_refuses() -> None:
    policy = NetworkPolicy(parse_networks("127.0.0.0/8"))
    for _ in range(3):
        policy.check_url("http://127.0.0.1:9/x")
        policy.check_url("http://name.example/x")
        with pytest.raises(ForbiddenTarget, match=r"169\.254\.169\.254"):
            policy.check_url("http://user:pw@169.254.169.254/latest?key=1")


def test_check_url_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api_service.safety.MAX_REMEMBERED_NETLOCS", 4)
    policy = NetworkPolicy()
    for i in range(10):
        policy.check_url(f"http://host{i}.example/")
    with pytest.raises(ForbiddenTarget):
        policy.check_url("http://10.0.0.1/")
    assert len(policy._netlocs) <= 4


def test_redirect_rule_without_policies_is_the_default() -> None:
    assert redirect_rule(None, None) is DEFAULT_RULE
    assert RedirectRule() == DEFAULT_RULE
    off = api_types_pb2.RedirectPolicy(mode=api_types_pb2.REDIRECT_MODE_OFF)
    assert redirect_rule(off, None) == RedirectRule(follow=False)


def _exchange() -> Exchange:
    target = Target("http://127.0.0.1:9/x", "GET", "prov", "ep", [], None)
    request = HttpRequest("GET", target.url, [], None, 1.0)
    return Exchange(target, request, "127.0.0.1:9", None, TargetStats("ep", ""), True)


def _parent(sampled: bool) -> trace.Span:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags))


def test_the_call_span_under_an_unsampled_parent_is_the_parents_context() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert isinstance(provider.sampler, sampling.ParentBased)
    with trace.use_span(_parent(sampled=False)):
        span = OutboundCaller.start_span(_exchange())
    assert not span.is_recording()
    assert span.get_span_context() == _parent(sampled=False).get_span_context()
    with trace.use_span(_parent(sampled=True)):
        span = OutboundCaller.start_span(_exchange())
    span.end()
    context = span.get_span_context()
    assert context.trace_flags.sampled
    assert context.trace_id == 0xABC
    assert context.span_id != 0xDEF  # a span of its own


def test_a_url_target_is_remembered_and_bad_urls_are_refused_every_time() -> None:
    registry = APIRegistry()
    call = api_service_pb2.CallRequest(url="http://127.0.0.1:9/x?q=1")
    first = resolve(registry, call)
    assert first == Target("http://127.0.0.1:9/x?q=1", "GET", "127.0.0.1", "", [], None)
    assert resolve(registry, call) is first
    posted = api_service_pb2.CallRequest(
        url=call.url, provider="p", method=api_types_pb2.HTTP_METHOD_POST
    )
    assert (resolve(registry, posted).method, resolve(registry, posted).provider) == ("POST", "p")
    for _ in range(2):
        with pytest.raises(InvalidCall, match="scheme"):
            resolve(registry, api_service_pb2.CallRequest(url="ftp://127.0.0.1/x"))
        with pytest.raises(InvalidCall, match="provider"):
            resolve(registry, api_service_pb2.CallRequest(url=call.url, provider="p" * 51))


def test_header_is_the_first_match_of_any_case() -> None:
    reply = HttpResponse(200, [("X-A", "1"), ("x-a", "2"), ("B", "3")], b"", "http://h/")
    assert reply.header("x-A") == "1"
    assert reply.header("b") == "3"
    assert reply.header("c") is None


@pytest.mark.parametrize("elapsed_s", [0.0, 0.0000004, 0.0012345, 1.5, 3601.000001])
def test_a_replys_latency_is_what_from_microseconds_makes(elapsed_s: float) -> None:
    made, expected = api_service_pb2.CallResponse(), api_service_pb2.CallResponse()
    set_latency(made, elapsed_s)
    expected.latency.FromMicroseconds(int(elapsed_s * 1_000_000))
    assert made == expected
    assert made.latency.ToMicroseconds() == int(elapsed_s * 1_000_000)


JSON_TEXTS = [
    "{}",
    ' {"a": [1, 2.5, "x", null, true]} ',
    "\n\t[1]\r\n",
    '"text"',
    "NaN",
    "-0.0e5",
    "",
    "   ",
    "{",
    "{} {}",
    "[1,]",
    "\x0c{}",  # whitespace to Python, not to JSON
    "\u00a0{}",
    "\ufeff{}",
    "tru",
    "[" * 100_000,  # deeper than the parser goes
    "[" * 50 + "]" * 50,
]


@pytest.mark.parametrize("text", JSON_TEXTS, ids=range(len(JSON_TEXTS)))
def test_is_json_agrees_with_json_loads(text: str) -> None:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        expected = False
    else:
        expected = True
    assert is_json(text) is expected


@pytest.mark.parametrize(
    "span_context",
    [
        SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0)),
        SpanContext(
            0xFEDCBA9876543210FEDCBA9876543210, 0x1, is_remote=True, trace_flags=TraceFlags(3)
        ),
        SpanContext(
            0xABC,
            0xDEF,
            is_remote=True,
            trace_flags=TraceFlags(1),
            trace_state=trace.TraceState([("vendor", "value"), ("other", "x")]),
        ),
        trace.INVALID_SPAN_CONTEXT,
    ],
)
def test_outbound_trace_headers_are_what_the_propagators_inject(span_context: SpanContext) -> None:
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    try:
        expected: dict[str, str] = {}
        propagate.inject(expected)
        assert outbound_trace_headers() == expected
        with_baggage = baggage.set_baggage("tenant", "t1")
        token_b = otel_context.attach(with_baggage)
        try:
            expected = {}
            propagate.inject(expected)
            assert outbound_trace_headers() == expected
            assert "baggage" in expected
        finally:
            otel_context.detach(token_b)
        with suppress_http_instrumentation():
            assert outbound_trace_headers() == {}
        with suppress_instrumentation():
            assert outbound_trace_headers() == {}
    finally:
        otel_context.detach(token)


def test_an_attempts_time_limit_is_never_longer_than_asked() -> None:
    transport = HttpTransport()
    first = transport._timeout(9.99)
    assert first.total == 9.99
    # A little more time left: the limit already made serves, a hair shorter.
    assert transport._timeout(9.995) is first
    # Less time left, or much more: a limit of its own.
    shorter = transport._timeout(9.98)
    assert shorter.total == 9.98
    assert transport._timeout(12.0).total == 12.0
    for asked in (0.05, 0.0501, 0.3, 29.9, 30.0):
        assert asked * 0.999 <= (transport._timeout(asked).total or 0) <= asked


def test_a_reply_nested_too_deep_for_the_parser_is_not_json_and_fails_no_call() -> None:
    deep = ("[" * 3000 + "]" * 3000).encode()
    reply = HttpResponse(200, [("Content-Type", "application/json")], deep, "http://h/")
    assert json_text(reply, deep, 64 * 1024) is None
    spec = api_types_pb2.Endpoint(name="deep", response_schema_json='{"type": "array"}')
    target = Target("http://h/", "GET", "p", "deep", [], None, spec)
    verdict = http_verdict(target)(reply)
    assert verdict.validation_error
    assert not verdict.success
