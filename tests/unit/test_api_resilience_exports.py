"""api_service.resilience's public surface is pinned, so it changes on purpose."""

from __future__ import annotations

import pytest

import api_service.resilience as resilience

pytestmark = pytest.mark.unit

EXPORTED = {
    "BreakerConfig",
    "BreakerState",
    "Bulkhead",
    "CircuitBreaker",
    "GlobalRateLimiter",
    "Guards",
    "Reservation",
    "RetryBudget",
    "RetryDecision",
    "RetryStrategy",
    "Ticket",
    "TokenBucket",
    "is_safe_to_repeat",
    "parse_retry_after",
}


def test_resilience_exports_are_pinned_and_importable() -> None:
    assert set(resilience.__all__) == EXPORTED
    for name in resilience.__all__:
        assert getattr(resilience, name) is not None
