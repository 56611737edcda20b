"""A first-come, first-served set of idle connections.

``asyncio.Queue`` is not fair under contention: a waiter woken by a ``put`` must still run before
it takes the item, and a newcomer calling ``get`` in between takes it instead; the woken waiter
then queues again at the back. Under a steady load some callers wait for most of a run. Here a
released connection is handed straight to the oldest waiter, and newcomers queue behind waiters.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class HandOff(Generic[T]):
    """Idle items lent in arrival order of the callers that asked for them."""

    def __init__(self) -> None:
        self._idle: collections.deque[T] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[T]] = collections.deque()

    def idle_count(self) -> int:
        return len(self._idle)

    def waiting(self) -> int:
        return len(self._waiters)

    def items(self) -> tuple[T, ...]:
        """The idle items, oldest first (a copy)."""
        return tuple(self._idle)

    def take(self) -> T:
        """The oldest idle item, taken at once (check ``would_wait`` first)."""
        return self._idle.popleft()

    def remove_where(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out every idle item ``predicate`` picks (expired ones, say)."""
        removed: list[T] = []
        kept: collections.deque[T] = collections.deque()
        for item in self._idle:
            (removed if predicate(item) else kept).append(item)
        self._idle = kept
        return removed

    def would_wait(self) -> bool:
        """Whether a ``get`` now would wait (nothing idle, or others waiting ahead)."""
        return not self._idle or bool(self._waiters)

    def put(self, item: T) -> None:
        """Give ``item`` to the oldest caller still waiting, else keep it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        self._idle.append(item)

    async def get(self, timeout_s: float | None = None) -> T:
        """An idle item at once when nobody waits ahead, else the next one released.

        Raises:
            TimeoutError: Nothing came within ``timeout_s``. A timer on the waiter rather than
                ``asyncio.timeout``, which costs a busy pool a measurable share of each call.
        """
        if self._idle and not self._waiters:
            return self._idle.popleft()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if timeout_s is None else loop.call_later(timeout_s, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            # Timed out or cancelled: an item handed over meanwhile goes to the next caller.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.put(waiter.result())
            else:
                waiter.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
