"""ApiService.GetStats and the monitor figures reflect the calls made, per target."""

from __future__ import annotations

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service import ApiApp
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_get_stats_reports_counts_success_rate_attempts_latency_and_circuits(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name="stats.flaky",
        provider="flaky",
        base_url=upstream.url,
        path="/flaky/{key}",
        retry=api_types_pb2.RetryPolicy(max_attempts=2),
        circuit_breaker=api_types_pb2.CircuitBreakerPolicy(enabled=True, consecutive_failures=5),
    )
    endpoint.retry.initial_backoff.FromMilliseconds(1)
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))

    def call(key: str, fail: int) -> api_service_pb2.CallRequest:
        return api_service_pb2.CallRequest(
            endpoint="stats.flaky",
            path_params={"key": key},
            query=[api_types_pb2.QueryParam(name="fail", value=str(fail))],
        )

    await api_stub.Call(call("ok", 0), timeout=5)
    await api_stub.Call(call("once", 1), timeout=5)  # retried to success: 2 attempts
    await api_stub.Call(call("never", 9), timeout=5)  # 2 attempts, still 503
    await api_stub.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/echo"), timeout=5)

    reply = await api_stub.GetStats(api_service_pb2.GetStatsRequest())
    by_endpoint = {s.endpoint: s for s in reply.stats}
    assert set(by_endpoint) == {"", "stats.flaky"}
    flaky = by_endpoint["stats.flaky"]
    assert flaky.calls == 3
    assert flaky.success_rate == pytest.approx(2 / 3)
    assert flaky.attempts == 5
    assert flaky.host == upstream.url.removeprefix("http://")
    assert flaky.endpoint_circuit == api_types_pb2.CIRCUIT_STATE_CLOSED
    assert flaky.host_circuit == api_types_pb2.CIRCUIT_STATE_CLOSED
    assert flaky.latency_p50.ToTimedelta().total_seconds() > 0
    assert flaky.latency_p99.ToTimedelta() >= flaky.latency_p50.ToTimedelta()
    url_calls = by_endpoint[""]
    assert url_calls.calls == 1
    assert url_calls.endpoint_circuit == api_types_pb2.CIRCUIT_STATE_UNSPECIFIED
    assert not reply.global_limits_degraded

    only = await api_stub.GetStats(api_service_pb2.GetStatsRequest(endpoint="stats.flaky"))
    assert [s.endpoint for s in only.stats] == ["stats.flaky"]

    figures = {(m.name, tuple(sorted(m.labels.items()))): m for m in api_app.figures()}
    calls = figures[("api_target_calls_total", (("endpoint", "stats.flaky"),))]
    assert calls.counter == 3
    assert figures[("api_target_attempts_total", (("endpoint", "stats.flaky"),))].counter == 5
    assert figures[("api_circuit_state", (("circuit", "endpoint:stats.flaky"),))].gauge == 0


async def test_get_stats_of_an_unknown_endpoint_is_not_found(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.GetStats(api_service_pb2.GetStatsRequest(endpoint="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
