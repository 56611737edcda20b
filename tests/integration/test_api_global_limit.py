"""The Redis-held global rate limit, in process, against real Redis servers over loopback."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.resilience import GlobalRateLimiter
from api_service.settings import ResilienceSettings
from paca_runtime import RuntimeSettings
from tests.conftest import Upstream, backing_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A redis-server of this test's own, so the test may stop it."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        async for line in proc.stdout:
            if b"Ready to accept connections" in line:
                break
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def start_api(tmp_path: Path, redis_url: str) -> ApiApp:
    # No db_service: the call log stays in the spool, which is all these tests need.
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address="",
        api_timeout_s=5.0,
        calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool-global"),
        resilience=ResilienceSettings(redis_url=redis_url, redis_timeout_s=0.2),
    )
    app = ApiApp(settings, RuntimeSettings(monitor_address="", state_dir=tmp_path))
    await app.start()
    return app


def global_endpoint(upstream: Upstream, rps: float, burst: int) -> api_types_pb2.Endpoint:
    return api_types_pb2.Endpoint(
        name=f"limited.{uuid.uuid4().hex[:12]}",
        provider="limited",
        base_url=upstream.url,
        path="/echo",
        rate_limit=api_types_pb2.RateLimitPolicy(
            requests_per_second=rps, burst=burst, scope=api_types_pb2.RATE_LIMIT_SCOPE_GLOBAL
        ),
    )


async def test_global_limit_refuses_over_the_burst_with_resource_exhausted(
    tmp_path: Path, upstream: Upstream
) -> None:
    app = await start_api(tmp_path, backing_url("PACA_TEST_REDIS_URL"))
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            stub = api_service_pb2_grpc.ApiServiceStub(channel)
            endpoint = global_endpoint(upstream, rps=0.1, burst=2)
            await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
            call = api_service_pb2.CallRequest(endpoint=endpoint.name)
            assert (await stub.Call(call, timeout=5)).status_code == 200
            assert (await stub.Call(call, timeout=5)).status_code == 200
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Call(call, timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        limiter = app.caller.guards.global_limiter
        assert isinstance(limiter, GlobalRateLimiter)
        assert limiter.decisions == 3
        assert limiter.degraded_decisions == 0
    finally:
        await app.stop()


async def test_redis_stopped_mid_run_degrades_to_local_limits_without_errors(
    tmp_path: Path,
    upstream: Upstream,
    private_redis: tuple[str, asyncio.subprocess.Process],
) -> None:
    url, redis_proc = private_redis
    app = await start_api(tmp_path, url)
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            stub = api_service_pb2_grpc.ApiServiceStub(channel)
            endpoint = global_endpoint(upstream, rps=1000, burst=1000)
            await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
            call = api_service_pb2.CallRequest(endpoint=endpoint.name)
            for _ in range(5):
                assert (await stub.Call(call, timeout=5)).status_code == 200
            redis_proc.kill()
            await redis_proc.wait()
            for _ in range(20):
                assert (await stub.Call(call, timeout=5)).status_code == 200
        limiter = app.caller.guards.global_limiter
        assert isinstance(limiter, GlobalRateLimiter)
        assert limiter.decisions == 5
        assert limiter.degraded
        assert limiter.errors >= 1
        stats = app.caller.stats.target(endpoint.name, "")
        assert stats.limiter_degraded == 20
        assert stats.calls == stats.successes == 25
    finally:
        await app.stop()
