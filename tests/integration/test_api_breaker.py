"""Circuit breakers of ApiService.Call over real sockets; time is moved, not waited for."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service import ApiApp
from api_service.resilience import BreakerState, Guards
from api_service.settings import ResilienceSettings
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError("no RetryInfo")


async def test_breaker_opens_after_the_configured_failures_and_recovers_through_half_open(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    upstream: Upstream,
    spans: InMemorySpanExporter,
) -> None:
    clock = FakeClock()
    api_app.caller.guards = Guards(ResilienceSettings(), clock=clock)
    endpoint = api_types_pb2.Endpoint(
        name="flaky.breaker",
        provider="flaky",
        base_url=upstream.url,
        path="/flaky/br",
        retry=api_types_pb2.RetryPolicy(max_attempts=1),
        circuit_breaker=api_types_pb2.CircuitBreakerPolicy(
            enabled=True, consecutive_failures=3, half_open_probes=1
        ),
    )
    endpoint.circuit_breaker.open_duration.FromSeconds(30)
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
    call = api_service_pb2.CallRequest(
        endpoint="flaky.breaker", query=[api_types_pb2.QueryParam(name="fail", value="3")]
    )
    for _ in range(3):
        assert (await api_stub.Call(call, timeout=10)).status_code == 503
    breaker = api_app.caller.guards.endpoint_breaker("flaky.breaker")
    assert breaker is not None
    assert breaker.current_state() is BreakerState.OPEN

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(call, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay_s(caught.value) == pytest.approx(30.0)
    assert upstream.flaky_hits["br"] == 3  # the open breaker kept the call from the upstream

    clock.now += 30
    reply = await api_stub.Call(call, timeout=10)  # the half-open probe
    assert reply.status_code == 200
    assert breaker.current_state() is BreakerState.CLOSED
    assert breaker.transitions == 3  # closed -> open -> half-open -> closed
    stats = api_app.caller.stats.target("flaky.breaker", "")
    assert stats.breaker_rejections == 1
    assert stats.calls == 5
    transitions = [
        (event.attributes or {}).get("paca.circuit.to")
        for span in spans.get_finished_spans()
        if span.name == "api.call"
        for event in span.events
        if event.name == "circuit.transition"
    ]
    assert transitions == ["open", "half_open", "closed"]


async def test_host_breaker_opens_on_failure_rate_across_url_calls(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    api_app.caller.guards = Guards(
        ResilienceSettings(host_breaker_failure_rate=0.5, host_breaker_min_calls=4)
    )
    await api_stub.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/echo"), timeout=10)
    for _ in range(3):
        reply = await api_stub.Call(
            api_service_pb2.CallRequest(url=f"{upstream.url}/status/500"), timeout=10
        )
        assert reply.status_code == 500
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/echo"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "host:127.0.0.1" in (caught.value.details() or "")
    assert len(upstream.seen_headers) == 4
