"""A database with read replicas behind the ordinary :class:`Backend` interface.

Writes, batches, transactions and migrations go to the primary; reads
(``execute(read_only=True)`` and ``stream``) go to a replica in rotation chosen by the balancing
policy, honouring the request's read preference and consistency token
(:mod:`db_service.routing.readpref`). A read that cannot reach its host is tried once more on
the next candidate, so losing a host fails no read another host could serve; a write is never
retried (it may have been applied), and fails at once with UNAVAILABLE while no primary is in
rotation. Every statement's latency feeds the host's moving average, and a statement that
could not reach its host counts as a failed health check.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from paca.db.v1 import db_types_pb2

from db_service.backends.base import Backend, Isolation, ResultSet, Session, TransactionSession
from db_service.errors import DbError, DbUnavailable
from db_service.routing.hosts import Host
from db_service.routing.positions import make_token
from db_service.routing.probes import Probe
from db_service.routing.replicaset import ReplicaSet, RoutingOptions

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_F = TypeVar("_F")


def host_fault(exc: DbUnavailable) -> bool:
    """Whether an UNAVAILABLE error says the host is unreachable (it counts against the host)
    rather than that its pool is busy (raised ``from None``: nothing below it failed)."""
    return exc.__cause__ is not None


def _untraced(method: _F) -> _F:
    """Leave the DB span to the host's engine, which knows the host's address (see
    db_service.tracing: a method marked traced is not wrapped again)."""
    method.__paca_traced__ = True  # type: ignore[attr-defined]
    return method


class RoutedBackend(Backend):
    """A primary and replicas of one database as one :class:`Backend`.

    Args:
        name: The database name.
        backends: One unopened backend per host, all of one engine; the probes find which one
            takes writes.
        options: Policy, lag bound and health-check settings.
        probes: One probe per host (tests inject faults here); default: the engine's own.
    """

    dialect = ""  # the hosts' engine, set per instance

    def __init__(
        self,
        name: str,
        backends: Sequence[Backend],
        options: RoutingOptions,
        *,
        probes: Sequence[Probe] | None = None,
    ) -> None:
        self.replicas = ReplicaSet(name, backends, options, probes=probes)
        first = backends[0]
        super().__init__(name, first.url, limits=first.limits)
        self.dialect = first.dialect  # type: ignore[misc]
        for backend in backends:
            # One database, one set of figures, whichever host ran the statement.
            backend.figures = self.figures

    def __repr__(self) -> str:
        return f"<RoutedBackend db={self.name} {self.replicas!r}>"

    def __getattr__(self, name: str) -> Any:
        # Engine-specific extras beyond Backend (e.g. MySQL's `mariadb`) are the primary's.
        if name.startswith("_") or name == "replicas":
            raise AttributeError(name)
        host = self.replicas.primary or self.replicas.hosts[0]
        return getattr(host.backend, name)

    @property
    def hosts(self) -> list[Host]:
        return self.replicas.hosts

    async def open(self) -> None:
        await self.replicas.open()
        self.returning = self.replicas.writer().backend.returning

    async def aclose(self) -> None:
        await self.replicas.aclose()

    def host_figures(self) -> list[db_types_pb2.HostHealth]:
        return [h.figures(self.name) for h in self.replicas.hosts]

    # Running statements on a host ----------------------------------------------------------

    async def _run(self, host: Host, call: Callable[[Backend], Awaitable[_T]]) -> _T:
        host.outstanding += 1
        started = self.replicas.clock()
        try:
            result = await call(host.backend)
        except DbUnavailable as exc:
            if host_fault(exc):
                host.last_error = str(exc)
                self.replicas.record_failure(host)
            raise
        finally:
            host.outstanding -= 1
        host.observe(self.replicas.clock() - started)
        host.served += 1
        host.health.success(probe=False)
        return result

    async def _read(self, call: Callable[[Backend], Awaitable[_T]]) -> _T:
        candidates = await self.replicas.readers()
        if not candidates:
            raise DbUnavailable(
                f"{self.name}: no host in rotation can serve the read",
                retry_after_s=self.replicas.options.interval_s,
            )
        try:
            return await self._run(candidates[0], call)
        except DbUnavailable as exc:
            if len(candidates) < 2 or not host_fault(exc):
                raise
            logger.info("%s: read retried on %s: %s", self.name, candidates[1].url, exc)
            return await self._run(candidates[1], call)

    # Backend -----------------------------------------------------------------------------

    @_untraced
    async def execute(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        read_only: bool,
        max_rows: int,
        max_bytes: int = 0,
        timeout_s: float | None = None,
    ) -> ResultSet:
        async def call(backend: Backend) -> ResultSet:
            return await backend.execute(
                sql,
                params,
                read_only=read_only,
                max_rows=max_rows,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
            )

        if read_only:
            return await self._read(call)
        return await self._run(self.replicas.writer(), call)

    @_untraced
    async def executemany(
        self, sql: str, rows: Sequence[Sequence[Any]], *, timeout_s: float | None = None
    ) -> int:
        return await self._run(
            self.replicas.writer(), lambda b: b.executemany(sql, rows, timeout_s=timeout_s)
        )

    @_untraced
    async def stream(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        chunk_rows: int,
        chunk_bytes: int,
        max_rows: int = 0,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[ResultSet, None]:
        candidates = (await self.replicas.readers())[:2]
        if not candidates:
            raise DbUnavailable(f"{self.name}: no host in rotation can serve the read")
        for attempt, host in enumerate(candidates):
            sent = False
            host.outstanding += 1
            started = self.replicas.clock()
            try:
                chunks = host.backend.stream(
                    sql,
                    params,
                    chunk_rows=chunk_rows,
                    chunk_bytes=chunk_bytes,
                    max_rows=max_rows,
                    timeout_s=timeout_s,
                )
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        if not sent:
                            host.observe(self.replicas.clock() - started)
                            sent = True
                        yield chunk
                host.served += 1
                host.health.success(probe=False)
                return
            except DbUnavailable as exc:
                if not host_fault(exc):
                    raise
                host.last_error = str(exc)
                self.replicas.record_failure(host)
                # Rows already sent cannot be taken back: only a stream that sent none moves.
                if sent or attempt == len(candidates) - 1:
                    raise
            finally:
                host.outstanding -= 1

    def transaction(
        self, *, isolation: Isolation, read_only: bool
    ) -> AbstractAsyncContextManager[TransactionSession]:
        # Transactions stay on the primary even when read-only: a replica may be behind
        # between two statements of one transaction's caller.
        return self.replicas.writer().backend.transaction(isolation=isolation, read_only=read_only)

    @asynccontextmanager
    async def migration_session(self) -> AsyncIterator[Session]:
        async with self.replicas.writer().backend.migration_session() as session:
            yield session

    def pool_stats(self) -> db_types_pb2.PoolStats:
        host = self.replicas.primary or self.replicas.hosts[0]
        stats = host.backend.pool_stats()
        stats.role, stats.state = "primary", host.state
        stats.queries = sum(h.backend.queries for h in self.replicas.hosts)
        stats.errors = sum(h.backend.errors for h in self.replicas.hosts)
        return stats

    async def consistency_token(self) -> str:
        """A token covering every write acknowledged so far (the primary's position now);
        empty when it cannot be read, so a write that succeeded is never reported failed."""
        host = self.replicas.primary
        if host is None:
            return ""
        try:
            result = await host.backend.execute(
                host.probe.position_sql(primary=True),
                (),
                read_only=True,
                max_rows=1,
                timeout_s=self.replicas.options.timeout_s,
            )
        except DbError as exc:
            logger.info("%s: no consistency token after a write: %s", self.name, exc)
            return ""
        position = result.rows[0].values[0].string_value if result.rows else ""
        return make_token(host.probe.flavor, position)


async def consistency_token(backend: Backend) -> str:
    """The token a write reply carries: empty for a database without replicas (every read
    goes to the one host, which has the write)."""
    if isinstance(backend, RoutedBackend):
        return await backend.consistency_token()
    return ""


def host_figures(backends: Sequence[Backend] | Any) -> list[db_types_pb2.HostHealth]:
    """Host health of every database with replicas among ``backends`` (for GetStats)."""
    return [f for b in backends if isinstance(b, RoutedBackend) for f in b.host_figures()]
