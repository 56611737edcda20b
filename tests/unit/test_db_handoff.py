"""The connection hand-off serves callers in the order they asked, newcomers included."""

from __future__ import annotations

import asyncio

import pytest

from db_service.backends.handoff import HandOff

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


async def test_a_released_item_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    pool: HandOff[str] = HandOff()
    first = asyncio.create_task(pool.get())
    second = asyncio.create_task(pool.get())
    await asyncio.sleep(0)  # both are waiting
    pool.put("a")
    # Asking in the same step, before the woken waiter runs (asyncio.Queue would lend "a"
    # here, and the woken waiter would queue again at the back): the newcomer queues instead.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await pool.get()
    assert await first == "a"
    pool.put("b")
    assert await second == "b"
    assert pool.idle_count() == 0


async def test_an_item_handed_to_a_caller_that_timed_out_goes_to_the_next() -> None:
    pool: HandOff[str] = HandOff()
    leaving = asyncio.create_task(pool.get())
    staying = asyncio.create_task(pool.get())
    await asyncio.sleep(0)
    pool.put("a")  # handed to `leaving`, which is cancelled before it runs
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await staying == "a"
    assert pool.idle_count() == 0


async def test_idle_items_are_lent_at_once_and_kept_when_nobody_waits() -> None:
    pool: HandOff[str] = HandOff()
    pool.put("a")
    assert not pool.would_wait()
    assert await pool.get() == "a"
    assert pool.would_wait()
    async with asyncio.timeout(0.05):
        waiter = asyncio.create_task(pool.get())
        await asyncio.sleep(0)
        waiter.cancel()
    pool.put("b")  # the cancelled waiter is skipped
    assert pool.idle_count() == 1
