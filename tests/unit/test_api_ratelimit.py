"""Token bucket and bulkhead: admission, waiting and refusal, with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from api_service.errors import RateLimited
from api_service.resilience import Bulkhead, TokenBucket

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_bucket_admits_a_burst_then_refuses_with_the_time_to_the_next_token() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.reserve(0).granted for _ in range(3)] == [True, True, True]
    refused = bucket.reserve(0)
    assert not refused.granted
    assert refused.wait_s == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.reserve(0).granted


def test_bucket_never_holds_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 2, clock=clock)
    clock.now += 3600
    assert bucket.tokens == 2


def test_waiting_callers_are_given_consecutive_slots_at_the_configured_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 1, clock=clock)
    waits = [bucket.reserve(max_wait_s=10).wait_s for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert not bucket.reserve(max_wait_s=0.9).granted  # the next slot is 1.0 s away


def test_a_refunded_reservation_frees_its_slot() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    bucket.reserve(0)
    reserved = bucket.reserve(5)
    assert reserved.wait_s == pytest.approx(1.0)
    bucket.refund()
    assert bucket.reserve(5).wait_s == pytest.approx(1.0)


async def test_full_bulkhead_refuses_at_once_when_the_caller_does_not_wait() -> None:
    bulkhead = Bulkhead("host:h", 1)
    await bulkhead.acquire(0)
    with pytest.raises(RateLimited):
        await bulkhead.acquire(0)
    assert bulkhead.rejections == 1
    bulkhead.release()
    await bulkhead.acquire(0)


async def test_bulkhead_hands_freed_slots_to_waiters_in_arrival_order() -> None:
    bulkhead = Bulkhead("host:h", 1)
    await bulkhead.acquire(0)
    order: list[int] = []

    async def wait_then_note(n: int) -> None:
        await bulkhead.acquire(5)
        order.append(n)

    waiters = [asyncio.create_task(wait_then_note(n)) for n in range(3)]
    await asyncio.sleep(0)  # let them queue
    for _ in range(3):
        bulkhead.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert bulkhead.waits == 3
    assert bulkhead.in_flight == 1


async def test_a_cancelled_waiter_does_not_take_a_slot() -> None:
    bulkhead = Bulkhead("host:h", 1)
    await bulkhead.acquire(0)
    waiter = asyncio.create_task(bulkhead.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    bulkhead.release()
    assert bulkhead.in_flight == 0
