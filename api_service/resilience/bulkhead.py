"""A bulkhead: at most N calls in flight to one upstream host; the rest wait in order or fail.

An ``asyncio.Semaphore`` would do the counting, but a waiter could not be told apart from an
arrival that never waited (stats count waits), and the limit could not change when an endpoint is
re-registered with another ``max_concurrency``; this small FIFO does both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from api_service.errors import RateLimited

# RetryInfo hint when the bulkhead is full: slots free up as calls finish, usually soon.
FULL_RETRY_AFTER_S = 0.1


class Bulkhead:
    """Concurrency limit for ``name`` (an upstream host).

    Lifecycle: ``await acquire(...)`` then ``release()`` exactly once per successful acquire.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.in_flight = 0
        self.waits = 0
        self.rejections = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self.name} in_flight={self.in_flight}/{self.limit} "
            f"waiting={len(self._waiters)}>"
        )

    async def acquire(self, max_wait_s: float) -> None:
        """Take a slot, waiting at most ``max_wait_s`` (0: fail at once when full).

        Raises:
            RateLimited: No slot within ``max_wait_s``.
        """
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        if max_wait_s <= 0:
            self.rejections += 1
            raise RateLimited(f"{self.limit} calls to {self.name} in flight", FULL_RETRY_AFTER_S)
        self.waits += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max_wait_s):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # a slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                self.rejections += 1
                raise RateLimited(
                    f"{self.limit} calls to {self.name} in flight", FULL_RETRY_AFTER_S
                ) from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        # release() handed its slot over without decrementing in_flight.

    def release(self) -> None:
        """Free a slot, handing it to the oldest waiter if there is one."""
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
