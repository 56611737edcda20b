"""The webhook event store: durable events, and their delivery state per consumer group.

Lifecycle of a (event, group) delivery row::

    PENDING ──claim──▶ leased (PENDING, lease_until in the future, attempts + 1)
       ▲                  │ ack ──▶ ACKED
       │  lease expires / │ release
       └──────────────────┘ expired with attempts >= max_attempts ──▶ DEAD
    ACKED / DEAD ──replay──▶ PENDING (attempts 0)

Times are wall-clock milliseconds taken from db_service's injectable clock, because leases are
compared across replicas and restarts (a monotonic clock is per process); the database stores
no clock of its own, so one db_service's clock decides for all of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from paca.db.v1 import event_store_service_pb2 as pb

from db_service import values
from db_service.backends.base import Backend
from db_service.errors import DbError
from db_service.events import sql
from paca_runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)

# Deadlock / lock-wait codes of MySQL and PostgreSQL: the statement did nothing, run it again.
_DEADLOCK_CODES = frozenset({"1213", "1205", "40P01", "40001"})
_DEADLOCK_RETRIES = 8
MAX_NAME_CHARS = 100
MAX_EVENT_ID_CHARS = 255
MAX_TYPE_CHARS = 200
MAX_CLAIM = 1000
_READ_LIMIT = 100_000
_GROUP = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def check_group(group: str, field: str = "group") -> str:
    if not _GROUP.match(group):
        raise InvalidArgument(field, "required: 1-100 letters, digits, '.', '_' or '-'")
    return group


@dataclass(frozen=True, slots=True)
class ClaimResult:
    events: list[pb.LeasedEvent]
    parked: int


class EventStore:
    """Event storage and delivery leases on one database (any dialect).

    Args:
        backend: The database holding ``webhook_events`` (migration 0002).
        clock: Wall-clock milliseconds; tests move it instead of sleeping.
    """

    def __init__(self, backend: Backend, *, clock: Callable[[], int] = wall_ms) -> None:
        self.backend = backend
        self.dialect = backend.dialect
        self.clock = clock

    def __repr__(self) -> str:
        return f"<EventStore db={self.backend.name} dialect={self.dialect}>"

    async def _rows(self, query: str, params: Sequence[Any]) -> list[list[Any]]:
        result = await self.backend.execute(
            sql.render(query, self.dialect), params, read_only=False, max_rows=_READ_LIMIT
        )
        return [values.decode_all(row.values, "row") for row in result.rows]

    async def _update(self, query: str, params: Sequence[Any]) -> int:
        # Claims and the rows they add for new events lock overlapping index ranges; InnoDB
        # resolves that by failing one statement as a deadlock, which is safe to run again.
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                result = await self.backend.execute(
                    query, params, read_only=False, max_rows=0, timeout_s=None
                )
                return max(0, result.rows_affected)
            except DbError as exc:
                if exc.engine_code not in _DEADLOCK_CODES or attempt == _DEADLOCK_RETRIES - 1:
                    raise
                logger.debug("event store statement hit a deadlock; retry %d", attempt + 1)
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def store(self, event: pb.StoredEvent) -> bool:
        """Store ``event`` unless (source, event_id) is stored; True when it was a duplicate."""
        if not event.source or len(event.source) > MAX_NAME_CHARS:
            raise InvalidArgument("event.source", f"required, at most {MAX_NAME_CHARS} characters")
        if not event.event_id or len(event.event_id) > MAX_EVENT_ID_CHARS:
            raise InvalidArgument(
                "event.event_id", f"required, at most {MAX_EVENT_ID_CHARS} characters"
            )
        if len(event.event_type) > MAX_TYPE_CHARS:
            raise InvalidArgument("event.event_type", f"at most {MAX_TYPE_CHARS} characters")
        received = (
            event.receive_time.ToMilliseconds() if event.HasField("receive_time") else self.clock()
        )
        row = (
            event.source,
            event.event_id,
            event.event_type,
            event.body,
            json.dumps(dict(event.headers), sort_keys=True),
            received,
            event.traceparent,
        )
        inserted = await self.backend.executemany(sql.insert_event(self.dialect), [row])
        return inserted == 0

    async def claim(
        self,
        group: str,
        *,
        source: str = "",
        event_type: str = "",
        max_events: int,
        visibility_ms: int,
        max_attempts: int,
    ) -> ClaimResult:
        """Lease up to ``max_events`` of the group's deliverable events, oldest first.

        First gives the group rows for events it has not seen and parks expired leases that used
        up ``max_attempts`` as DEAD. The lease is one UPDATE stamping a fresh token; the rows
        carrying the token are this claim's, whatever other claims run at the same time.
        """
        check_group(group)
        if not 1 <= max_events <= MAX_CLAIM:
            raise InvalidArgument("max_events", f"must be 1..{MAX_CLAIM}")
        if visibility_ms <= 0:
            raise InvalidArgument("visibility_timeout", "must be > 0")
        if max_attempts < 1:
            raise InvalidArgument("max_attempts", "must be >= 1")
        await self._update(sql.materialize(self.dialect), (group, group))
        now = self.clock()
        parked = await self._update(
            sql.render(sql.PARK_DEAD, self.dialect), (now, group, max_attempts, now)
        )
        token = uuid.uuid4().hex
        conditions, extra = sql.filters(source, event_type)
        params = [token, now + visibility_ms, group, now, *extra, max_events]
        if await self._update(sql.claim(self.dialect, conditions), params) == 0:
            return ClaimResult([], parked)
        rows = await self._rows(sql.SELECT_LEASED, (group, token))
        return ClaimResult([_leased(row) for row in rows], parked)

    async def ack(self, group: str, leases: Sequence[pb.LeaseRef]) -> int:
        """Mark leased events delivered; returns how many of ``leases`` were still held."""
        check_group(group)
        query = sql.render(sql.ACK, self.dialect)
        return sum(
            [await self._update(query, (group, ref.event_key, ref.lease_token)) for ref in leases]
        )

    async def release(self, group: str, leases: Sequence[pb.LeaseRef]) -> int:
        """End leases early so the events can be claimed again now (attempts stay counted)."""
        check_group(group)
        query = sql.render(sql.RELEASE, self.dialect)
        return sum(
            [await self._update(query, (group, ref.event_key, ref.lease_token)) for ref in leases]
        )

    async def dead(self, group: str, limit: int) -> list[pb.LeasedEvent]:
        check_group(group)
        if not 0 <= limit <= MAX_CLAIM:
            raise InvalidArgument("limit", f"must be 0..{MAX_CLAIM}")
        rows = await self._rows(sql.SELECT_DEAD, (group, limit or 100))
        events = [_leased(row) for row in rows]
        for event in events:
            event.lease_token = ""
        return events

    async def replay(self, group: str, since_ms: int, source: str = "") -> int:
        """Make the group's events received at or after ``since_ms`` deliverable again."""
        check_group(group)
        await self._update(sql.materialize(self.dialect), (group, group))
        conditions, extra = sql.filters(source, "")
        return await self._update(
            sql.render(sql.REPLAY + conditions, self.dialect), (group, since_ms, *extra)
        )

    async def stats(self, group: str = "") -> pb.GetEventStatsResponse:
        now = self.clock()
        where, params = (" WHERE group_name = ?", [now, group]) if group else ("", [now])
        rows = await self._rows(sql.STATS.format(where=where), params)
        (count,) = (await self._rows(sql.COUNT_EVENTS, ()))[0]
        groups = [
            pb.GroupEventStats(
                group=name,
                pending=int(ready or 0),
                leased=int(pending or 0) - int(ready or 0),
                acked=int(acked or 0),
                dead=int(dead or 0),
            )
            for name, ready, pending, acked, dead in rows
        ]
        return pb.GetEventStatsResponse(events=int(count), groups=groups)


def _leased(row: Sequence[Any]) -> pb.LeasedEvent:
    pk, source, event_id, event_type, body, headers, received_ms, traceparent, token, attempts = row
    event = pb.StoredEvent(
        source=source,
        event_id=event_id,
        event_type=event_type,
        body=bytes(body),
        headers=json.loads(headers),
        traceparent=traceparent,
    )
    event.receive_time.FromDatetime(dt.datetime.fromtimestamp(int(received_ms) / 1000, dt.UTC))
    return pb.LeasedEvent(event=event, event_key=int(pk), lease_token=token, attempt=int(attempts))
