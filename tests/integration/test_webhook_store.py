"""The webhook event store on real engines: dedupe, atomic claims, leases, dead events, replay."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from paca.db.v1 import event_store_service_pb2 as pb

from db_service.backends.base import Backend
from db_service.databases import BACKENDS
from db_service.events import EventStore
from db_service.migrations import MigrationManager, builtin_migrations
from tests.integration.test_db_service import DIALECTS, temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

StoreFactory = Callable[[], Awaitable[EventStore]]


class Clock:
    """Wall-clock milliseconds that the test moves."""

    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=DIALECTS)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[StoreFactory]:
    """Each call opens another pool on the same migrated database, as another replica would."""
    opened: list[Backend] = []
    async with temporary_database(request.param, tmp_path) as url:

        async def factory() -> EventStore:
            backend = BACKENDS[request.param]("main", url, pool_size=3, acquire_timeout_s=10)
            await backend.open()
            opened.append(backend)
            await MigrationManager(backend, builtin_migrations(backend.dialect)).migrate()
            return EventStore(backend, clock=clock)

        try:
            yield factory
        finally:
            for backend in opened:
                await backend.aclose()


def event(n: int, source: str = "github", event_type: str = "push") -> pb.StoredEvent:
    return pb.StoredEvent(
        source=source,
        event_id=f"evt-{n}",
        event_type=event_type,
        body=b'{"n": %d}\x00\xff' % n,
        headers={"content-type": "application/json"},
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )


def refs(events: list[pb.LeasedEvent]) -> list[pb.LeaseRef]:
    return [pb.LeaseRef(event_key=e.event_key, lease_token=e.lease_token) for e in events]


async def test_event_is_stored_once_per_source_and_id_and_reads_back_byte_exact(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    assert await store.store(event(1)) is False
    assert await store.store(event(1)) is True
    assert await store.store(event(1, source="stripe")) is False
    claimed = await store.claim("g", max_events=10, visibility_ms=1000, max_attempts=3)
    assert [e.event.source for e in claimed.events] == ["github", "stripe"]
    first = claimed.events[0]
    assert first.event.body == event(1).body
    assert dict(first.event.headers) == {"content-type": "application/json"}
    assert first.event.traceparent == event(1).traceparent
    assert first.attempt == 1


async def test_claim_filters_by_source_and_event_type(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.store(event(1, "github", "push"))
    await store.store(event(2, "github", "issues"))
    await store.store(event(3, "stripe", "push"))
    got = await store.claim(
        "g", source="github", event_type="push", max_events=10, visibility_ms=1000, max_attempts=3
    )
    assert [e.event.event_id for e in got.events] == ["evt-1"]


async def test_expired_lease_is_claimed_again_then_parked_dead_after_max_attempts(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = await make_store()
    await store.store(event(1))
    for attempt in (1, 2):
        got = await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=2)
        assert [e.attempt for e in got.events] == [attempt]
        assert (
            await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=2)
        ).events == []
        clock.now_ms += 1001
    parked = await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=2)
    assert parked.events == []
    assert parked.parked == 1
    dead = await store.dead("g", 0)
    assert [(e.event.event_id, e.attempt) for e in dead] == [("evt-1", 2)]
    stats = await store.stats("g")
    assert (stats.events, stats.groups[0].dead) == (1, 1)


async def test_ack_ends_delivery_and_a_stale_lease_cannot_ack(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = await make_store()
    await store.store(event(1))
    first = (await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=5)).events
    clock.now_ms += 1001
    second = (await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=5)).events
    assert await store.ack("g", refs(first)) == 0
    assert await store.ack("g", refs(second)) == 1
    assert await store.ack("g", refs(second)) == 0
    clock.now_ms += 5000
    assert (await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=5)).events == []


async def test_released_event_is_claimable_at_once(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.store(event(1))
    got = (await store.claim("g", max_events=5, visibility_ms=60_000, max_attempts=5)).events
    assert await store.release("g", refs(got)) == 1
    again = (await store.claim("g", max_events=5, visibility_ms=60_000, max_attempts=5)).events
    assert [e.attempt for e in again] == [2]


async def test_replay_redelivers_acked_events_received_since_a_time(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = await make_store()
    await store.store(event(1))
    clock.now_ms += 10_000
    since = clock.now_ms
    await store.store(event(2))
    got = (await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=5)).events
    assert await store.ack("g", refs(got)) == 2
    assert await store.replay("g", since) == 1
    again = (await store.claim("g", max_events=5, visibility_ms=1000, max_attempts=5)).events
    assert [(e.event.event_id, e.attempt) for e in again] == [("evt-2", 1)]


async def test_concurrent_claimers_on_separate_pools_lease_each_event_once_per_group(
    make_store: StoreFactory,
) -> None:
    writer = await make_store()
    replicas = [await make_store() for _ in range(3)]
    for n in range(150):
        await writer.store(event(n))
    seen: dict[str, Counter[str]] = {"a": Counter(), "b": Counter()}

    async def consume(store: EventStore, group: str) -> None:
        while True:
            got = await store.claim(group, max_events=7, visibility_ms=60_000, max_attempts=5)
            if not got.events:
                return
            seen[group].update(e.event.event_id for e in got.events)
            assert await store.ack(group, refs(got.events)) == len(got.events)

    await asyncio.gather(*(consume(s, g) for s in replicas for g in ("a", "b")))
    for group in ("a", "b"):
        assert len(seen[group]) == 150
        assert set(seen[group].values()) == {1}
