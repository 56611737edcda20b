"""Retries: exponential backoff with full jitter, one overall deadline, a retry budget.

A :class:`RetryStrategy` decides, after each attempt, whether another one is worth making and how
long to wait first; the caller's loop does the waiting. The decision is pure (time and randomness
are injected), so it is tested with a fake clock:

- only retryable outcomes are retried: no response (connection failure, attempt timeout) or a
  status in the policy's set (429, 502, 503, 504 by default);
- only idempotent methods are retried, unless the caller gave an idempotency key;
- the wait is ``uniform(0, min(max_backoff, initial * multiplier ** n))`` ("full jitter"), or the
  upstream's ``Retry-After`` when it sent one;
- no wait is started that would not leave time for the next attempt before the deadline: the
  call then ends at once with its last outcome instead of sleeping into a certain timeout.

:class:`RetryBudget` is Envoy's retry budget: retries in flight at most ``ratio`` of the requests
in flight (with a floor of ``min_concurrency``), so when an upstream fails for everyone, retries
add at most that share of load instead of multiplying it.

Hand-written rather than built on tenacity: tenacity wraps a function in a loop, while here the
loop also consults breakers, limiters and the budget between attempts and needs the decision's
reason for spans and stats; the strategy itself is a few lines of arithmetic.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEFAULT_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """After an attempt: retry after ``delay_s`` seconds, or stop (``reason`` says why)."""

    retry: bool
    delay_s: float = 0.0
    reason: str = ""


# The decision after most attempts, made once.
_NOT_RETRYABLE = RetryDecision(False, reason="outcome not retryable")


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """When and after how long to retry one call.

    Args:
        max_attempts: Attempts in all, the first included (1 disables retries).
        initial_backoff_s: Upper bound of the first jittered wait.
        max_backoff_s: Upper bound of any jittered wait.
        multiplier: Growth of the bound per attempt.
        retryable_statuses: HTTP statuses worth another attempt.
        max_retry_after_s: A Retry-After longer than this ends the call instead of waiting.
        min_attempt_s: Time an attempt needs at least; a wait that leaves less is not started.
        random: Source of uniform numbers in [0, 1) (injectable for tests).
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    retryable_statuses: frozenset[int] = DEFAULT_RETRYABLE_STATUSES
    max_retry_after_s: float = 30.0
    min_attempt_s: float = 0.01
    random: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoffs must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def backoff_bound_s(self, attempt: int) -> float:
        """The upper bound of the wait after attempt number ``attempt`` (1-based)."""
        exponent = min(attempt - 1, 64)  # keeps the power finite; the bound caps it anyway
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**exponent)

    def retryable_status(self, status: int) -> bool:
        return status in self.retryable_statuses

    def decide(
        self,
        *,
        attempt: int,
        retryable: bool,
        safe: bool,
        retry_after_s: float | None,
        time_left_s: float | None,
    ) -> RetryDecision:
        """Decide after attempt number ``attempt`` (1-based).

        Args:
            attempt: The attempt just made.
            retryable: Its outcome is one worth retrying.
            safe: The request may be sent twice (idempotent method or idempotency key).
            retry_after_s: The upstream's Retry-After, when it sent one.
            time_left_s: Time to the overall deadline; None when there is none.
        """
        if not retryable:
            return _NOT_RETRYABLE
        if not safe:
            return RetryDecision(False, reason="method not idempotent and no idempotency key")
        if attempt >= self.max_attempts:
            return RetryDecision(False, reason="attempts exhausted")
        if retry_after_s is not None:
            if retry_after_s > self.max_retry_after_s:
                return RetryDecision(False, reason="Retry-After too long")
            delay = retry_after_s
        else:
            delay = self.random() * self.backoff_bound_s(attempt)
        if time_left_s is not None and delay + self.min_attempt_s > time_left_s:
            return RetryDecision(False, delay, reason="wait would not fit in the deadline")
        return RetryDecision(True, delay, reason="retry")

    @staticmethod
    def from_policy(
        defaults: RetryStrategy,
        *,
        max_attempts: int = 0,
        initial_backoff_s: float = 0.0,
        max_backoff_s: float = 0.0,
        multiplier: float = 0.0,
        retryable_statuses: Iterable[int] = (),
    ) -> RetryStrategy:
        """``defaults`` with every non-zero (set) field of an endpoint's policy applied."""
        statuses = frozenset(retryable_statuses)
        return RetryStrategy(
            max_attempts=max_attempts or defaults.max_attempts,
            initial_backoff_s=initial_backoff_s or defaults.initial_backoff_s,
            max_backoff_s=max_backoff_s or defaults.max_backoff_s,
            multiplier=multiplier or defaults.multiplier,
            retryable_statuses=statuses or defaults.retryable_statuses,
            max_retry_after_s=defaults.max_retry_after_s,
            min_attempt_s=defaults.min_attempt_s,
            random=defaults.random,
        )


def is_safe_to_repeat(method: str, idempotency_key: str) -> bool:
    """Whether a request may be sent more than once (RFC 9110 idempotent methods)."""
    return bool(idempotency_key) or method.upper() in IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), or None.

    ``now`` is the wall clock, needed only to turn an HTTP-date into a delay.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    delay = when.timestamp() - now()
    return max(0.0, delay) if math.isfinite(delay) else None


class RetryBudget:
    """Envoy's retry budget: concurrent retries at most a share of concurrent requests.

    Each call holds a request slot for its whole life (``start``/``finish``); each retry asks for
    a retry slot (``try_retry``) and gives it back when that attempt ends (``retry_done``).

    Args:
        ratio: Share of requests in flight that may be retries (Envoy's default: 0.2).
        min_concurrency: Retries in flight always allowed, so a quiet service can still retry.
    """

    def __init__(self, ratio: float = 0.2, min_concurrency: int = 3) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        self.ratio = ratio
        self.min_concurrency = min_concurrency
        self.active_requests = 0
        self.active_retries = 0
        self.denied = 0

    def __repr__(self) -> str:
        return (
            f"<RetryBudget ratio={self.ratio} requests={self.active_requests} "
            f"retries={self.active_retries} denied={self.denied}>"
        )

    def start(self) -> None:
        self.active_requests += 1

    def finish(self) -> None:
        self.active_requests -= 1

    def try_retry(self) -> bool:
        """Take a retry slot if the budget allows one; counts a denial otherwise."""
        allowed = max(self.min_concurrency, math.floor(self.ratio * self.active_requests))
        if self.active_retries >= allowed:
            self.denied += 1
            return False
        self.active_retries += 1
        return True

    def retry_done(self) -> None:
        self.active_retries -= 1
