"""A local token bucket: a sustained rate with a burst, and reservations for callers who wait.

``reserve`` either takes a token now, reserves the next free one (the bucket goes into debt, so
waiters are served in arrival order at exactly the configured rate), or, when that token would
come later than the caller can wait, takes nothing and says how long until one would be free (the
``RetryInfo`` of a RESOURCE_EXHAUSTED reply).

Hand-written: aiolimiter does the waiting itself on the loop's clock and cannot answer "how long
until a token" for a fail-fast reply; a bucket is a few lines of arithmetic over an injectable
clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reservation:
    """``granted``: a token is yours after waiting ``wait_s``; otherwise retry in ``wait_s``."""

    granted: bool
    wait_s: float


class TokenBucket:
    """``rate_per_s`` tokens a second, holding at most ``burst``; starts full.

    Args:
        rate_per_s: Sustained rate (> 0).
        burst: Bucket size, the most calls admitted at once (>= 1).
        clock: Monotonic seconds.
    """

    def __init__(
        self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate_per_s}/s burst={self.burst} tokens={self.tokens:.2f}>"

    @property
    def tokens(self) -> float:
        """Tokens now (negative while reservations are outstanding)."""
        self._refill()
        return self._tokens

    def reserve(self, max_wait_s: float) -> Reservation:
        """Take a token, waiting at most ``max_wait_s`` for it (0: only if one is free now)."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return Reservation(True, 0.0)
        wait_s = (1 - self._tokens) / self.rate_per_s
        if wait_s > max_wait_s:
            return Reservation(False, wait_s)
        self._tokens -= 1
        return Reservation(True, wait_s)

    def refund(self) -> None:
        """Give back a reserved token whose call was cancelled before it ran."""
        self._refill()
        self._tokens = min(float(self.burst), self._tokens + 1)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
            self._updated = now
