"""Local rate limits and the per-host bulkhead of ApiService.Call, over real sockets."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service import ApiApp
from api_service.resilience import Guards
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


async def register(
    stub: api_service_pb2_grpc.ApiServiceStub,
    upstream: Upstream,
    name: str,
    path: str,
    limit: api_types_pb2.RateLimitPolicy,
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name=name, provider="limited", base_url=upstream.url, path=path, rate_limit=limit
    )
    await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))


async def test_over_the_rate_limit_fails_fast_with_resource_exhausted_and_retry_info(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    clock = FakeClock()
    api_app.caller.guards = Guards(ResilienceSettings(), clock=clock)
    limit = api_types_pb2.RateLimitPolicy(requests_per_second=0.5, burst=2)
    await register(api_stub, upstream, "limited.fast", "/echo", limit)
    call = api_service_pb2.CallRequest(endpoint="limited.fast")
    for _ in range(2):
        assert (await api_stub.Call(call, timeout=5)).status_code == 200
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(call, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay_s(caught.value) == pytest.approx(2.0)
    clock.now += 2
    assert (await api_stub.Call(call, timeout=5)).status_code == 200
    stats = api_app.caller.stats.target("limited.fast", "")
    assert stats.limiter_rejections == 1
    assert len(upstream.seen_headers) == 3


async def test_a_waiting_endpoint_holds_the_call_for_its_slot_instead_of_refusing(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    clock = FakeClock()
    api_app.caller.guards = Guards(ResilienceSettings(), clock=clock)
    limit = api_types_pb2.RateLimitPolicy(requests_per_second=20, burst=1, wait=True)
    await register(api_stub, upstream, "limited.wait", "/echo", limit)
    call = api_service_pb2.CallRequest(endpoint="limited.wait")
    replies = await asyncio.gather(*(api_stub.Call(call, timeout=5) for _ in range(3)))
    assert [r.status_code for r in replies] == [200, 200, 200]
    stats = api_app.caller.stats.target("limited.wait", "")
    assert stats.limiter_waits == 2
    assert stats.limiter_wait_s == pytest.approx(0.05 + 0.10)


async def test_wait_longer_than_the_deadline_is_refused_at_once(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    limit = api_types_pb2.RateLimitPolicy(requests_per_second=0.01, burst=1, wait=True)
    await register(api_stub, upstream, "limited.slow", "/echo", limit)
    call = api_service_pb2.CallRequest(endpoint="limited.slow")
    assert (await api_stub.Call(call, timeout=5)).status_code == 200
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(call, timeout=2)  # the next slot is 100 s away
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_bulkhead_refuses_a_second_concurrent_call_to_the_host_and_frees_on_cancel(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    limit = api_types_pb2.RateLimitPolicy(max_concurrency=1)
    await register(api_stub, upstream, "bulkhead.slow", "/slow", limit)
    await register(api_stub, upstream, "bulkhead.echo", "/echo", limit)
    waiting = api_types_pb2.RateLimitPolicy(max_concurrency=1, wait=True)
    await register(api_stub, upstream, "bulkhead.echo_wait", "/echo", waiting)
    slow = api_stub.Call(
        api_service_pb2.CallRequest(
            endpoint="bulkhead.slow", query=[api_types_pb2.QueryParam(name="s", value="20")]
        ),
        timeout=25,
    )
    slow_task = asyncio.ensure_future(slow)
    await upstream.slow_started.wait()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(api_service_pb2.CallRequest(endpoint="bulkhead.echo"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow_task
    # The cancelled call gives its slot back when the server sees the cancellation; a caller
    # that may wait gets it then.
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(endpoint="bulkhead.echo_wait"), timeout=5
    )
    assert reply.status_code == 200
