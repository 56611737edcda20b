"""A shared breaker's local side: remote verdicts applied, its own trips handed to the hub."""

from __future__ import annotations

import pytest

from api_service.resilience.breaker import BreakerConfig, BreakerState
from api_service.resilience.shared_breaker import SharedBreakers, SharedCircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingHub(SharedBreakers):
    """Keeps what would be published (no Redis is contacted: the client connects lazily)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("redis://127.0.0.1:1/0", clock=clock)
        self.sent: list[tuple[str, BreakerState]] = []

    def publish(self, breaker: SharedCircuitBreaker, state: BreakerState) -> None:
        self.sent.append((breaker.name, state))


def test_a_remote_trip_opens_until_the_origins_moment_and_is_not_echoed() -> None:
    clock = FakeClock()
    hub = RecordingHub(clock)
    breaker = hub.breaker("endpoint:x", BreakerConfig(consecutive_failures=2, open_s=30))
    breaker.apply_remote(BreakerState.OPEN, 12.0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after_s() == pytest.approx(12.0)
    clock.now += 12
    assert breaker.current_state() is BreakerState.HALF_OPEN
    assert hub.sent == []  # neither the remote open nor the half-open is published


def test_own_trips_and_recoveries_are_published_half_open_is_not() -> None:
    clock = FakeClock()
    hub = RecordingHub(clock)
    breaker = hub.breaker("endpoint:y", BreakerConfig(consecutive_failures=1, open_s=5))
    breaker.record(breaker.acquire(), failed=True)
    clock.now += 5
    breaker.record(breaker.acquire(), failed=False)  # the probe passes
    assert hub.sent == [("endpoint:y", BreakerState.OPEN), ("endpoint:y", BreakerState.CLOSED)]


def test_a_remote_close_closes_an_open_breaker() -> None:
    hub = RecordingHub(FakeClock())
    breaker = hub.breaker("endpoint:z", BreakerConfig(consecutive_failures=1, open_s=5))
    breaker.record(breaker.acquire(), failed=True)
    breaker.apply_remote(BreakerState.CLOSED)
    assert breaker.state is BreakerState.CLOSED
    assert hub.degraded  # never subscribed: trips are not shared
