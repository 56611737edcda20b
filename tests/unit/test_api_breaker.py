"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from api_service.errors import CircuitOpen
from api_service.resilience import BreakerConfig, BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **config: float) -> tuple[CircuitBreaker, list[str]]:
    changes: list[str] = []
    made = CircuitBreaker(
        "endpoint:x",
        BreakerConfig(**config),  # type: ignore[arg-type]
        clock=clock,
        on_transition=lambda _name, old, new: changes.append(f"{old.value}->{new.value}"),
    )
    return made, changes


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(b.acquire(), failed=True)


def succeed(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(b.acquire(), failed=False)


def test_breaker_opens_after_consecutive_failures_and_refuses_with_retry_after() -> None:
    clock = FakeClock()
    b, changes = breaker(clock, consecutive_failures=3, open_s=30.0)
    fail(b, 2)
    succeed(b)  # a success resets the run
    fail(b, 2)
    assert b.current_state() is BreakerState.CLOSED
    fail(b)
    assert b.current_state() is BreakerState.OPEN
    clock.now += 10
    with pytest.raises(CircuitOpen) as caught:
        b.acquire()
    assert caught.value.retry_after_s == pytest.approx(20.0)
    assert b.rejected == 1
    assert changes == ["closed->open"]


def test_breaker_trips_on_failure_rate_only_with_minimum_volume() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, consecutive_failures=0, failure_rate=0.5, minimum_calls=10)
    for _ in range(4):
        fail(b)
        succeed(b)
    assert b.current_state() is BreakerState.CLOSED  # 50 % of 8 calls: below the minimum volume
    fail(b)
    assert b.current_state() is BreakerState.CLOSED  # 5 of 9
    succeed(b)
    assert b.current_state() is BreakerState.OPEN  # 5 of 10 = 50 %


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, consecutive_failures=0, failure_rate=0.5, minimum_calls=4, window_s=10.0)
    fail(b, 3)
    clock.now += 11
    succeed(b, 3)
    fail(b)
    assert b.current_state() is BreakerState.CLOSED  # 1 of 4 in the window


def test_breaker_half_open_admits_the_configured_probes_and_closes_when_they_pass() -> None:
    clock = FakeClock()
    b, changes = breaker(clock, consecutive_failures=1, open_s=5.0, half_open_probes=2)
    fail(b)
    clock.now += 5
    assert b.current_state() is BreakerState.HALF_OPEN
    first, second = b.acquire(), b.acquire()
    with pytest.raises(CircuitOpen):
        b.acquire()
    b.record(first, failed=False)
    assert b.current_state() is BreakerState.HALF_OPEN
    b.record(second, failed=False)
    assert b.current_state() is BreakerState.CLOSED
    assert changes == ["closed->open", "open->half_open", "half_open->closed"]


def test_a_failed_probe_reopens_the_breaker_for_a_full_open_period() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, consecutive_failures=1, open_s=5.0)
    fail(b)
    clock.now += 5
    fail(b)
    assert b.current_state() is BreakerState.OPEN
    assert b.retry_after_s() == pytest.approx(5.0)


def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, consecutive_failures=1, open_s=1.0)
    fail(b)
    clock.now += 1
    b.cancel(b.acquire())
    succeed(b)
    assert b.current_state() is BreakerState.CLOSED


def test_outcome_of_a_call_admitted_before_the_breaker_opened_is_ignored() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, consecutive_failures=1, open_s=1.0)
    slow = b.acquire()
    fail(b)
    clock.now += 1
    probe = b.acquire()
    b.record(slow, failed=False)  # stale: must not close the breaker
    assert b.current_state() is BreakerState.HALF_OPEN
    b.record(probe, failed=False)
    assert b.current_state() is BreakerState.CLOSED


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        BreakerConfig(failure_rate=2.0)
