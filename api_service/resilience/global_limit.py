"""One rate limit shared by every replica: a token bucket kept in Redis.

The bucket is GCRA (the "generic cell rate algorithm": a token bucket stored as one number, the
theoretical arrival time of the next call), run as a Lua script so each decision is one atomic
round trip, and timed by Redis's own clock so replicas with skewed clocks still agree. Like the
local :class:`~api_service.resilience.ratelimit.TokenBucket` it can reserve a future slot for a
caller who waits, so waiting callers are served in order at the configured rate.

Redis must never hang or fail a call: each decision has a short timeout, and when Redis is slow
or down the caller falls back to its local bucket (a per-replica limit) and the fallback is
counted (``degraded_decisions``, shown in stats). A breaker keeps a dead Redis from costing every
call a timeout: after ``FAILURES_TO_DEGRADE`` failures in a row, Redis is left alone for
``retry_s`` before it is asked again. ``open()`` connects and loads the script ahead of the
first call, so the first decisions do not pay for connection set-up inside their short timeout.

Hand-written on redis.asyncio rather than built on ``limits``: ``limits`` answers only yes or no
per window, so it cannot reserve a slot for a waiting caller (waiters would poll and stampede at
each window edge), and it needs a second round trip for the time until the next slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

from api_service.errors import CircuitOpen
from api_service.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from api_service.resilience.ratelimit import Reservation

logger = logging.getLogger(__name__)

# Failures in a row after which Redis is left alone for a while (one slow answer is not enough).
FAILURES_TO_DEGRADE = 3

# KEYS[1]: the bucket. ARGV: seconds per token, burst, longest wait the caller accepts.
# Returns {granted (0/1), wait in seconds as text} (Lua numbers would be truncated to integers).
GCRA_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, tostring(wait)} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return {1, tostring(wait)}
"""


class GlobalRateLimiter:
    """Rate limits held in Redis, shared by every replica that uses the same Redis and prefix.

    Lifecycle: ``open()`` (optional warm-up), ``reserve()`` any number of times, then
    ``aclose()`` (idempotent).

    Args:
        url: Redis URL (``redis://host:port/db``); never logged, it may hold a password.
        timeout_s: Longest a decision may take before the local bucket decides instead.
        retry_s: After a Redis failure, time before Redis is asked again.
        prefix: Key prefix of the buckets.
        clock: Monotonic seconds (for the retry pause).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.1,
        retry_s: float = 1.0,
        prefix: str = "paca:ratelimit:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._script = self._redis.register_script(GCRA_SCRIPT)
        self._breaker = CircuitBreaker(
            "redis:ratelimit",
            BreakerConfig(consecutive_failures=FAILURES_TO_DEGRADE, open_s=retry_s),
            clock=clock,
        )
        self.decisions = 0
        self.degraded_decisions = 0
        self.errors = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<GlobalRateLimiter {'degraded' if self.degraded else 'ok'} "
            f"decisions={self.decisions} degraded={self.degraded_decisions}>"
        )

    @property
    def degraded(self) -> bool:
        """True while Redis is being left alone after a failure (local limits apply)."""
        return self._breaker.current_state() is not BreakerState.CLOSED

    async def open(self) -> None:
        """Connect and load the script; a failure is logged, not raised (Redis may come later)."""
        try:
            async with asyncio.timeout(max(1.0, self.timeout_s)):
                await self._redis.script_load(GCRA_SCRIPT)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("Redis for global rate limits is not reachable: %s", type(exc).__name__)

    async def reserve(
        self, key: str, rate_per_s: float, burst: int, max_wait_s: float
    ) -> Reservation | None:
        """Take a token of bucket ``key`` within ``max_wait_s``; None when Redis cannot say.

        On None the caller applies its local bucket instead.
        """
        try:
            ticket = self._breaker.acquire()
        except CircuitOpen:
            self.degraded_decisions += 1
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                granted, wait = await self._script(
                    keys=[self.prefix + key],
                    args=[repr(1.0 / rate_per_s), max(1, burst), repr(max(0.0, max_wait_s))],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._breaker.record(ticket, failed=True)
            self.errors += 1
            self.degraded_decisions += 1
            logger.debug("global rate limit decided locally: %s", type(exc).__name__)
            return None
        except BaseException:
            self._breaker.cancel(ticket)
            raise
        self._breaker.record(ticket, failed=False)
        self.decisions += 1
        return Reservation(bool(int(granted)), float(wait))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()
