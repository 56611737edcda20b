"""Breakers shared through a real Redis: trips cross replicas; without Redis each is local."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from paca.api.v1 import api_types_pb2

from api_service.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from api_service.resilience.guards import Guards
from api_service.resilience.shared_breaker import SharedBreakers
from api_service.settings import ResilienceSettings
from tests.conftest import backing_url, eventually
from tests.integration.conftest import CuttableProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

CONFIG = BreakerConfig(consecutive_failures=2, open_s=30.0)


@pytest.fixture
def redis_url() -> str:
    return backing_url("PACA_TEST_REDIS_URL")


@pytest.fixture
async def hubs(redis_url: str) -> AsyncIterator[Callable[[str], Awaitable[SharedBreakers]]]:
    made: list[SharedBreakers] = []
    prefix = f"paca-test:breaker:{uuid.uuid4().hex}:"

    async def hub(url: str) -> SharedBreakers:
        shared = SharedBreakers(url, timeout_s=0.2, retry_s=0.1, prefix=prefix)
        made.append(shared)
        await shared.open()
        return shared

    try:
        yield hub
    finally:
        for shared in made:
            await shared.aclose()


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.record(breaker.acquire(), failed=True)


async def test_a_trip_on_one_replica_opens_the_breaker_on_the_other(
    redis_url: str, hubs: Callable[[str], Awaitable[SharedBreakers]]
) -> None:
    a, b = await hubs(redis_url), await hubs(redis_url)
    await asyncio.gather(a.subscribed(), b.subscribed())
    here, there = a.breaker("endpoint:x", CONFIG), b.breaker("endpoint:x", CONFIG)
    trip(here)
    assert here.state is BreakerState.OPEN
    await eventually(lambda: there.current_state() is BreakerState.OPEN)
    assert 29 < there.retry_after_s() <= 30
    # A replica started later learns the open state from the key.
    c = await hubs(redis_url)
    await c.subscribed()
    late = c.breaker("endpoint:x", CONFIG)
    await eventually(lambda: late.current_state() is BreakerState.OPEN)
    # Closing (here after a successful probe, simulated by the other side's verdict) spreads too.
    there.apply_remote(BreakerState.CLOSED)
    there._hub.publish(there, BreakerState.CLOSED)
    await eventually(lambda: here.current_state() is BreakerState.CLOSED)
    assert not a.degraded
    assert not b.degraded


async def test_an_unreachable_redis_leaves_breakers_local_and_calls_unhurt(
    hubs: Callable[[str], Awaitable[SharedBreakers]],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    hub = await hubs(f"redis://127.0.0.1:{closed_port}/0")
    breaker = hub.breaker("endpoint:y", CONFIG)
    async with asyncio.timeout(1.0):
        trip(breaker)
        await asyncio.sleep(0)  # let the background publish run and fail
    assert breaker.state is BreakerState.OPEN
    await eventually(lambda: hub.publish_failures >= 1)
    assert hub.degraded


async def test_redis_lost_mid_run_degrades_to_local_and_recovers(
    redis_url: str, hubs: Callable[[str], Awaitable[SharedBreakers]]
) -> None:
    parts = urlsplit(redis_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    path = parts.path or "/0"
    a = await hubs(f"redis://127.0.0.1:{proxy.port}{path}")
    b = await hubs(redis_url)
    await asyncio.gather(a.subscribed(), b.subscribed())
    here, there = a.breaker("endpoint:z", CONFIG), b.breaker("endpoint:z", CONFIG)

    await proxy.cut()
    await eventually(lambda: a.degraded)
    trip(here)  # still trips, locally, without waiting on Redis
    assert here.state is BreakerState.OPEN
    await eventually(lambda: a.publish_failures >= 1)
    assert there.current_state() is BreakerState.CLOSED  # not shared while cut off

    await proxy.start()  # Redis is back at the same address
    await a.subscribed()
    # What tripped here while cut off reaches the other replica once Redis is back.
    await eventually(lambda: there.current_state() is BreakerState.OPEN)
    await eventually(lambda: not a.degraded)
    there.apply_remote(BreakerState.CLOSED)
    here.apply_remote(BreakerState.CLOSED)
    trip(there)
    await eventually(lambda: here.current_state() is BreakerState.OPEN)
    await a.aclose()
    await proxy.cut()


async def test_guards_share_the_breaker_of_an_endpoint_whose_policy_says_so(redis_url: str) -> None:
    settings = ResilienceSettings(redis_url=redis_url, redis_timeout_s=0.5)
    replicas = [Guards(settings), Guards(settings)]
    spec = api_types_pb2.Endpoint(name=f"shared.{uuid.uuid4().hex[:8]}")
    spec.circuit_breaker.enabled = True
    spec.circuit_breaker.shared = True
    spec.circuit_breaker.consecutive_failures = 2
    local = api_types_pb2.Endpoint(name=f"local.{uuid.uuid4().hex[:8]}")
    local.circuit_breaker.CopyFrom(spec.circuit_breaker)
    local.circuit_breaker.shared = False
    try:
        here, there = (g.breakers(spec, "h:1")[0] for g in replicas)
        lone_here, lone_there = (g.breakers(local, "h:1")[0] for g in replicas)
        for guards in replicas:
            assert guards.shared_breakers is not None
            await guards.shared_breakers.subscribed()
        trip(here)
        trip(lone_here)
        await eventually(lambda: there.current_state() is BreakerState.OPEN)
        assert lone_there.current_state() is BreakerState.CLOSED
    finally:
        for guards in replicas:
            await guards.aclose()
