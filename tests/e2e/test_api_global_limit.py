"""One global rate limit held across three api_service processes that share Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from paca_runtime.stack import ServiceProcess
from tests.conftest import Upstream, backing_url

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

RATE_PER_S = 40.0
DURATION_S = 3.0
WORKERS_PER_PROCESS = 6
BURST = 5


@pytest.fixture
async def api_processes(tmp_path: Path) -> AsyncIterator[list[ServiceProcess]]:
    redis_url = backing_url("PACA_TEST_REDIS_URL")
    processes = [
        ServiceProcess(
            "api_service",
            {
                "PACA_STATE_DIR": str(tmp_path / f"api{i}"),
                "PACA_MONITOR_ADDRESS": "",
                "PACA_DB_ADDRESS": "",
                "PACA_API_LISTEN": "127.0.0.1:0",
                "PACA_API_REDIS_URL": redis_url,
                "PACA_LOG_LEVEL": "WARNING",
                "PACA_SHUTDOWN_GRACE_S": "2",
            },
        )
        for i in range(3)
    ]
    try:
        await asyncio.gather(*(p.start() for p in processes))
        yield processes
    finally:
        for process in processes:
            await process.stop()


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError("RESOURCE_EXHAUSTED without RetryInfo")


async def test_global_limit_holds_within_ten_percent_across_three_processes(
    api_processes: list[ServiceProcess], upstream: Upstream
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name=f"global.{uuid.uuid4().hex[:12]}",
        provider="global",
        base_url=upstream.url,
        path="/echo",
        rate_limit=api_types_pb2.RateLimitPolicy(
            requests_per_second=RATE_PER_S, burst=BURST, scope=api_types_pb2.RATE_LIMIT_SCOPE_GLOBAL
        ),
    )
    channels = [grpc.aio.insecure_channel(p.addresses["grpc"]) for p in api_processes]
    stubs = [api_service_pb2_grpc.ApiServiceStub(c) for c in channels]
    try:
        for stub in stubs:
            await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
        admitted = 0
        refused = 0
        codes: set[grpc.StatusCode] = set()
        end = time.monotonic() + DURATION_S

        async def worker(stub: api_service_pb2_grpc.ApiServiceStub) -> None:
            nonlocal admitted, refused
            call = api_service_pb2.CallRequest(endpoint=endpoint.name)
            while time.monotonic() < end:
                try:
                    reply = await stub.Call(call, timeout=5)
                except grpc.aio.AioRpcError as exc:
                    codes.add(exc.code())
                    refused += 1
                    # A polite client waits as RetryInfo says (bounded by the run's end).
                    await asyncio.sleep(min(retry_delay_s(exc), max(0.0, end - time.monotonic())))
                    continue
                assert reply.status_code == 200
                admitted += 1

        await asyncio.gather(*(worker(stub) for stub in stubs for _ in range(WORKERS_PER_PROCESS)))
    finally:
        for channel in channels:
            await channel.close()
    expected = RATE_PER_S * DURATION_S + BURST
    assert abs(admitted - expected) <= 0.1 * expected, (admitted, expected, refused)
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert refused > admitted  # the offered load really was over the limit
    assert len(upstream.seen_headers) == admitted
