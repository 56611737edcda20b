"""Retries of ApiService.Call against an upstream that fails N times, over real sockets."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from api_service import ApiApp
from tests.conftest import Upstream, json_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def resend_count(span: ReadableSpan) -> int:
    value = (span.attributes or {}).get("http.request.resend_count", 0)
    assert isinstance(value, int)
    return value


async def recorded_attempts(
    app: ApiApp, db: db_service_pb2_grpc.DbServiceStub, provider: str
) -> list[int]:
    await app.recorder.flushed()
    reply = await db.Query(
        db_service_pb2.QueryRequest(
            sql=f"SELECT attempts FROM external_api_logs WHERE provider = '{provider}'",
            read_only=True,
        )
    )
    return [int(row.values[0].int64_value) for row in reply.rows]


async def test_get_that_fails_twice_is_retried_to_success_with_each_attempt_a_span(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
    spans: InMemorySpanExporter,
) -> None:
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(url=f"{upstream.url}/flaky/a?fail=2", provider="flaky"),
        timeout=10,
    )
    assert reply.status_code == 200
    assert json_body(reply.body) == {"hit": 3}
    assert reply.attempts == 3
    assert upstream.flaky_hits["a"] == 3
    assert await recorded_attempts(api_app, db_stub, "flaky") == [3]
    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    call = next(s for s in finished if s.name == "api.call")
    assert call.attributes is not None
    assert call.attributes["paca.attempts"] == 3
    assert [e.name for e in call.events] == ["retry", "retry"]
    attempts = [
        s
        for s in finished
        if s.parent is not None
        and s.parent.span_id == call.context.span_id
        and s.kind == trace.SpanKind.CLIENT
    ]
    assert len(attempts) == 3
    resends = sorted(resend_count(s) for s in attempts)
    assert resends == [0, 1, 2]


async def test_post_is_not_retried_without_an_idempotency_key(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(
            url=f"{upstream.url}/flaky/b?fail=1",
            method=api_types_pb2.HTTP_METHOD_POST,
            json_body="{}",
        ),
        timeout=10,
    )
    assert reply.status_code == 503
    assert reply.attempts == 1
    assert upstream.flaky_hits["b"] == 1


async def test_post_with_an_idempotency_key_is_retried_and_sends_the_key(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(
            url=f"{upstream.url}/flaky/c?fail=1",
            method=api_types_pb2.HTTP_METHOD_POST,
            json_body="{}",
            idempotency_key="order-42",
        ),
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.attempts == 2
    assert [h["Idempotency-Key"] for h in upstream.seen_headers] == ["order-42", "order-42"]


async def test_429_with_retry_after_longer_than_the_deadline_fails_fast_with_the_reply(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    # The deadline is 3 s and the upstream asks for 20 s: waiting could only end in
    # DEADLINE_EXCEEDED, so the 429 comes back at once (a late return would raise instead).
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(url=f"{upstream.url}/flaky/d?fail=5&status=429&retry_after=20"),
        timeout=3,
    )
    assert reply.status_code == 429
    assert reply.attempts == 1
    assert upstream.flaky_hits["d"] == 1


async def test_endpoint_retry_policy_sets_attempts_and_retryable_statuses(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name="flaky.e",
        provider="flaky",
        base_url=upstream.url,
        path="/flaky/e",
        retry=api_types_pb2.RetryPolicy(max_attempts=5, retryable_status_codes=[500]),
    )
    endpoint.retry.initial_backoff.FromMilliseconds(1)
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(
            endpoint="flaky.e", query=[api_types_pb2.QueryParam(name="fail", value="9")]
        ),
        timeout=10,
    )
    assert reply.status_code == 503  # not in this endpoint's retryable set
    assert reply.attempts == 1
    retried = await api_stub.Call(
        api_service_pb2.CallRequest(
            endpoint="flaky.e",
            query=[
                api_types_pb2.QueryParam(name="fail", value="9"),
                api_types_pb2.QueryParam(name="status", value="500"),
            ],
        ),
        timeout=10,
    )
    assert retried.status_code == 500
    assert retried.attempts == 5


async def test_unreachable_upstream_is_retried_then_unavailable(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(api_service_pb2.CallRequest(url="http://127.0.0.1:1/"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    stats = api_app.caller.stats.target("", "127.0.0.1:1")
    assert stats.attempts == 3
