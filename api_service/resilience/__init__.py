"""Policies that keep outbound calls from hurting the caller or the upstream.

Retries (backoff with full jitter under one deadline, a retry budget), circuit breakers, token
buckets and bulkheads; each takes an injectable clock, so tests move time instead of sleeping.
"""

from api_service.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker, Ticket
from api_service.resilience.bulkhead import Bulkhead
from api_service.resilience.global_limit import GlobalRateLimiter
from api_service.resilience.guards import Guards
from api_service.resilience.ratelimit import Reservation, TokenBucket
from api_service.resilience.retry import (
    RetryBudget,
    RetryDecision,
    RetryStrategy,
    is_safe_to_repeat,
    parse_retry_after,
)

__all__ = [
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
]
