"""Retry strategy and retry budget: pure decisions over a fake clock and fake randomness."""

from __future__ import annotations

import pytest

from api_service.resilience import RetryBudget, RetryStrategy, is_safe_to_repeat, parse_retry_after

pytestmark = pytest.mark.unit


def strategy(**fields: object) -> RetryStrategy:
    return RetryStrategy(random=lambda: 1.0, **fields)  # type: ignore[arg-type]


def test_backoff_bound_grows_exponentially_and_is_capped() -> None:
    s = strategy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    assert [s.backoff_bound_s(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert s.backoff_bound_s(10_000) == 1.0


def test_wait_is_full_jitter_between_zero_and_the_bound() -> None:
    draws = iter([0.0, 0.5, 0.999])
    s = RetryStrategy(initial_backoff_s=0.4, max_attempts=10, random=lambda: next(draws))
    delays = [
        s.decide(attempt=1, retryable=True, safe=True, retry_after_s=None, time_left_s=None).delay_s
        for _ in range(3)
    ]
    assert delays == pytest.approx([0.0, 0.2, 0.3996])


def test_stops_after_max_attempts() -> None:
    s = strategy(max_attempts=3)
    kwargs = {"retryable": True, "safe": True, "retry_after_s": None, "time_left_s": None}
    assert s.decide(attempt=2, **kwargs).retry  # type: ignore[arg-type]
    last = s.decide(attempt=3, **kwargs)  # type: ignore[arg-type]
    assert not last.retry
    assert last.reason == "attempts exhausted"


def test_non_retryable_outcome_and_unsafe_method_are_not_retried() -> None:
    s = strategy()
    assert not s.decide(
        attempt=1, retryable=False, safe=True, retry_after_s=None, time_left_s=None
    ).retry
    unsafe = s.decide(attempt=1, retryable=True, safe=False, retry_after_s=None, time_left_s=None)
    assert not unsafe.retry
    assert "idempotency key" in unsafe.reason


def test_retry_after_replaces_the_backoff_when_it_fits() -> None:
    decision = strategy().decide(
        attempt=1, retryable=True, safe=True, retry_after_s=2.0, time_left_s=10.0
    )
    assert decision.retry
    assert decision.delay_s == 2.0


def test_retry_after_longer_than_the_time_left_fails_fast() -> None:
    decision = strategy().decide(
        attempt=1, retryable=True, safe=True, retry_after_s=5.0, time_left_s=3.0
    )
    assert not decision.retry
    assert decision.reason == "wait would not fit in the deadline"


def test_backoff_that_leaves_no_time_for_an_attempt_is_not_started() -> None:
    s = strategy(initial_backoff_s=1.0, min_attempt_s=0.05)
    assert not s.decide(
        attempt=1, retryable=True, safe=True, retry_after_s=None, time_left_s=1.04
    ).retry
    assert s.decide(
        attempt=1, retryable=True, safe=True, retry_after_s=None, time_left_s=1.06
    ).retry


def test_retry_after_beyond_the_configured_maximum_is_not_waited_for() -> None:
    decision = strategy(max_retry_after_s=30.0).decide(
        attempt=1, retryable=True, safe=True, retry_after_s=31.0, time_left_s=None
    )
    assert not decision.retry


def test_endpoint_policy_overrides_only_the_fields_it_sets() -> None:
    defaults = strategy(max_attempts=3, initial_backoff_s=0.1)
    merged = RetryStrategy.from_policy(defaults, max_attempts=5, retryable_statuses=[500])
    assert merged.max_attempts == 5
    assert merged.initial_backoff_s == 0.1
    assert merged.retryable_statuses == frozenset({500})


@pytest.mark.parametrize(
    ("method", "key", "safe"),
    [
        ("GET", "", True),
        ("put", "", True),
        ("DELETE", "", True),
        ("POST", "", False),
        ("PATCH", "", False),
        ("POST", "k-1", True),
    ],
)
def test_only_idempotent_methods_or_keyed_requests_are_safe_to_repeat(
    method: str, key: str, safe: bool
) -> None:
    assert is_safe_to_repeat(method, key) is safe


def test_retry_after_parses_seconds_and_http_dates_against_the_wall_clock() -> None:
    assert parse_retry_after("7") == 7.0
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=lambda: now) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=lambda: now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_budget_allows_a_share_of_live_requests_with_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_concurrency=3)
    for _ in range(20):
        budget.start()
    granted = sum(budget.try_retry() for _ in range(10))
    assert granted == 4  # 20 % of 20 live requests
    assert budget.denied == 6
    budget.retry_done()
    assert budget.try_retry()


def test_budget_floor_lets_a_quiet_service_retry() -> None:
    budget = RetryBudget(ratio=0.2, min_concurrency=3)
    budget.start()
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]
