"""The endpoint registry kept in db_service, so restarts and replicas see the same endpoints.

Endpoints live in db_service's built-in table ``api_endpoints`` (migration 0003), reached only
through db_service's query-builder RPCs (Select / Insert / Update / Delete), so every engine
works. Each replica keeps a read-through copy in memory::

    Call ──known name──▶ memory (never waits on db_service)
         ──unknown────▶ one Select by name (then memory); misses are remembered briefly
    every refresh_s ──▶ Select all: memory follows registrations and removals made elsewhere
    RegisterEndpoint / RemoveEndpoint ──▶ db_service first, then memory

db_service being down never fails a registration or a removal (the call log's rule: nothing
lost, nothing failed): the change applies to this replica's memory at once and is written to
db_service by the next refresh that reaches it (``pending`` counts what waits), before the
refresh reloads anything. Endpoints of the config file take the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from paca.api.v1 import api_types_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from api_service.errors import UnknownEndpoint
from api_service.registry import APIRegistry, validate_endpoint
from paca_runtime.errors import Unavailable

logger = logging.getLogger(__name__)
TABLE = "api_endpoints"
COLUMNS = ("name", "provider", "spec", "created_ms", "updated_ms")
R = TypeVar("R")
# How db_service reports a duplicate key (a unique constraint: FAILED_PRECONDITION).
_CONFLICTS = frozenset({grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION})


def _eq(column: str, value: str) -> db_types_pb2.Filter:
    return db_types_pb2.Filter(
        comparison=db_types_pb2.Filter.Comparison(
            column=column,
            operator=db_types_pb2.FILTER_OPERATOR_EQ,
            values=[values_pb2.Value(string_value=value)],
        )
    )


def _stamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _from_row(row: values_pb2.Row) -> api_types_pb2.Endpoint:
    values = {name: value for name, value in zip(COLUMNS, row.values, strict=False)}
    endpoint = api_types_pb2.Endpoint()
    json_format.Parse(values["spec"].string_value, endpoint, ignore_unknown_fields=True)
    endpoint.create_time.CopyFrom(_stamp(values["created_ms"].int64_value))
    endpoint.update_time.CopyFrom(_stamp(values["updated_ms"].int64_value))
    return endpoint


class DurableRegistry(APIRegistry):
    """An :class:`APIRegistry` stored through db_service (see the module docstring).

    Lifecycle: ``open()`` once (first load; a db_service that is down is retried in the
    background, not raised), then use; ``aclose()`` (idempotent).

    Args:
        channel: The channel to db_service (the one the call log uses).
        database: db_service database name ("" = its main database).
        refresh_s: Period of the full reload that follows changes made by other replicas.
        timeout_s: Time limit of each db_service request.
        miss_ttl_s: How long an unknown name is answered from memory before asking again.
        clock: Monotonic seconds (miss cache).
        wall_ms: Epoch milliseconds (create/update times).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        database: str = "",
        refresh_s: float = 5.0,
        timeout_s: float = 2.0,
        miss_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        super().__init__()
        self._stub = db_service_pb2_grpc.DbServiceStub(channel)
        self.database = database
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.miss_ttl_s = miss_ttl_s
        self._mono = clock
        self._wall_ms = wall_ms
        self._misses: dict[str, float] = {}
        # Registrations and removals db_service has not stored yet (config file included).
        self._unsaved: dict[str, api_types_pb2.Endpoint] = {}
        self._unremoved: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.loaded = asyncio.Event()
        self.refreshes = 0
        self.refresh_failures = 0

    def __repr__(self) -> str:
        return (
            f"<DurableRegistry endpoints={len(self)} refreshes={self.refreshes} "
            f"failures={self.refresh_failures} pending={self.pending}>"
        )

    @property
    def pending(self) -> int:
        """Registrations and removals made while db_service was down, not yet stored."""
        return len(self._unsaved) + len(self._unremoved)

    async def open(self) -> None:
        await self._refresh_once()
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_loop(), name="registry-refresh")

    async def aclose(self) -> None:
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def save(self, endpoint: api_types_pb2.Endpoint) -> tuple[api_types_pb2.Endpoint, bool]:
        """Validate, store in db_service, then in memory; returns the stored copy and whether
        it is new. While db_service is down it is kept in memory and stored later.

        Raises:
            InvalidCall: A bad field (nothing stored).
        """
        try:
            return await self._store(endpoint)
        except Unavailable as exc:
            logger.warning("registry: %s; %s kept in memory until it answers", exc, endpoint.name)
            created = endpoint.name not in self._endpoints
            self.pin(endpoint)
            return self._endpoints[endpoint.name], created

    async def _store(self, endpoint: api_types_pb2.Endpoint) -> tuple[api_types_pb2.Endpoint, bool]:
        validate_endpoint(endpoint)
        stored = api_types_pb2.Endpoint()
        stored.CopyFrom(endpoint)
        stored.ClearField("create_time")
        stored.ClearField("update_time")
        spec = json_format.MessageToJson(stored, indent=None, sort_keys=True)
        now_ms = self._wall_ms()
        created = await self._insert(stored, spec, now_ms)
        created_ms = now_ms if created else await self._update(stored, spec, now_ms)
        stored.create_time.CopyFrom(_stamp(created_ms))
        stored.update_time.CopyFrom(_stamp(now_ms))
        self._endpoints[stored.name] = stored
        self._misses.pop(stored.name, None)
        self._unsaved.pop(stored.name, None)
        self._unremoved.discard(stored.name)
        return stored, created

    def pin(self, endpoint: api_types_pb2.Endpoint) -> None:
        """Serve ``endpoint`` now and store it in db_service once it answers (config file)."""
        stored, _ = self.register(endpoint)
        self._unsaved[stored.name] = stored
        self._unremoved.discard(stored.name)

    async def delete(self, name: str) -> None:
        """Remove from db_service and memory (from memory only, for now, while it is down).

        Raises:
            UnknownEndpoint: Neither knows ``name``.
        """
        try:
            await self._remove(name)
        except Unavailable as exc:
            if name not in self._endpoints:
                raise UnknownEndpoint(name, "name") from None
            logger.warning("registry: %s; %s removed here until it answers", exc, name)
            del self._endpoints[name]
            self._unsaved.pop(name, None)
            self._unremoved.add(name)

    async def _remove(self, name: str) -> None:
        request = db_service_pb2.DeleteRequest(
            database=self.database, delete=db_types_pb2.Delete(table=TABLE, where=_eq("name", name))
        )
        reply = await self._rpc(self._stub.Delete, request)
        known = self._endpoints.pop(name, None) is not None
        self._unsaved.pop(name, None)
        self._unremoved.discard(name)
        if reply.rows_affected == 0 and not known:
            raise UnknownEndpoint(name, "name")

    async def fetch(self, name: str, field: str = "name") -> api_types_pb2.Endpoint:
        found = self._endpoints.get(name)
        if found is not None:
            return found
        missed_at = self._misses.get(name)
        if missed_at is not None and self._mono() - missed_at < self.miss_ttl_s:
            raise UnknownEndpoint(name, field)
        rows = await self._select(_eq("name", name))
        if not rows:
            if len(self._misses) > 10_000:
                self._misses.clear()  # bounded: names come from callers
            self._misses[name] = self._mono()
            raise UnknownEndpoint(name, field)
        endpoint = _from_row(rows[0])
        self._endpoints[name] = endpoint
        return endpoint

    async def refresh(self) -> None:
        """Reload every endpoint from db_service (and store pending config endpoints first).

        Raises:
            Unavailable: db_service did not answer; memory is left as it was.
        """
        for endpoint in list(self._unsaved.values()):
            await self._store(endpoint)
        for name in list(self._unremoved):
            with contextlib.suppress(UnknownEndpoint):
                await self._remove(name)
        rows = await self._select(None)
        endpoints = {}
        for row in rows:
            try:
                endpoint = _from_row(row)
            except json_format.ParseError:
                logger.error("registry: unreadable endpoint row skipped")
                continue
            endpoints[endpoint.name] = endpoint
        self._endpoints = endpoints
        self._misses.clear()
        self.refreshes += 1
        self.loaded.set()

    async def _refresh_once(self) -> None:
        try:
            await self.refresh()
        except Unavailable as exc:
            self.refresh_failures += 1
            logger.warning("registry: db_service unavailable, serving from memory: %s", exc)

    async def _refresh_loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.refresh_s)
            if not self._closing.is_set():
                await self._refresh_once()

    async def _insert(self, endpoint: api_types_pb2.Endpoint, spec: str, now_ms: int) -> bool:
        """Insert the row; False when a row of that name exists already."""
        row = values_pb2.Row(
            values=[
                values_pb2.Value(string_value=endpoint.name),
                values_pb2.Value(string_value=endpoint.provider),
                values_pb2.Value(string_value=spec),
                values_pb2.Value(int64_value=now_ms),
                values_pb2.Value(int64_value=now_ms),
            ]
        )
        request = db_service_pb2.InsertRequest(
            database=self.database,
            insert=db_types_pb2.Insert(table=TABLE, columns=COLUMNS, rows=[row]),
        )
        try:
            await self._rpc(self._stub.Insert, request, conflict_ok=True)
        except _Conflict:
            return False
        return True

    async def _update(self, endpoint: api_types_pb2.Endpoint, spec: str, now_ms: int) -> int:
        """Update the row; returns its creation time (ms)."""
        request = db_service_pb2.UpdateRequest(
            database=self.database,
            update=db_types_pb2.Update(
                table=TABLE,
                set=[
                    db_types_pb2.Assignment(
                        column="provider", value=values_pb2.Value(string_value=endpoint.provider)
                    ),
                    db_types_pb2.Assignment(
                        column="spec", value=values_pb2.Value(string_value=spec)
                    ),
                    db_types_pb2.Assignment(
                        column="updated_ms", value=values_pb2.Value(int64_value=now_ms)
                    ),
                ],
                where=_eq("name", endpoint.name),
            ),
        )
        await self._rpc(self._stub.Update, request)
        rows = await self._select(_eq("name", endpoint.name))
        if not rows:  # removed by another replica in between: it is being registered anew
            return now_ms
        return int(rows[0].values[COLUMNS.index("created_ms")].int64_value)

    async def _select(self, where: db_types_pb2.Filter | None) -> list[values_pb2.Row]:
        select = db_types_pb2.Select(table=TABLE, columns=COLUMNS)
        if where is not None:
            select.where.CopyFrom(where)
        reply = await self._rpc(
            self._stub.Select, db_service_pb2.SelectRequest(database=self.database, select=select)
        )
        if reply.truncated:
            logger.error("registry: db_service truncated the endpoint list")
        return list(reply.rows)

    async def _rpc(
        self, method: Callable[..., Awaitable[R]], request: Message, *, conflict_ok: bool = False
    ) -> R:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if conflict_ok and exc.code() in _CONFLICTS:
                raise _Conflict from None
            raise Unavailable(f"registry store (db_service) failed: {exc.code().name}") from None


class _Conflict(Exception):
    """The row exists already."""
