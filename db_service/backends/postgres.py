"""PostgreSQL through asyncpg connections from our own pool (``pg_pool``).

Statements are prepared (asyncpg caches them per connection) and run as ``pg_statements``
describes: a read marked read-only as a plain read when its text shows it can neither write nor
change the session (``pg_plain_reads``), otherwise in a READ ONLY transaction. Either way the
engine itself refuses a write: every pooled session is read-only by default
(``pg_pool.SESSION_SETTINGS``), and writes run in READ WRITE transactions. At most
``max_rows`` rows are read. Value typing is in ``postgres_types``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
from paca.db.v1 import db_types_pb2

from db_service.backends.base import (
    Backend,
    Isolation,
    PoolLimits,
    ResultSet,
    TransactionSession,
    stream_chunks,
)
from db_service.backends.pg_errors import UNAVAILABLE, connection_lost, translate
from db_service.backends.pg_plain_reads import is_plain_read
from db_service.backends.pg_pool import PgConnection, PgPool
from db_service.backends.pg_statements import (
    PLAIN_READS,
    STALE_STATEMENT,
    abort,
    begin,
    end,
    fetch,
    forget_statements,
    is_stale,
    read_plain,
    set_timeout,
)
from db_service.backends.postgres_types import (
    bind,
    columns_of,
    row_encoder,
    rows_affected,
)
from db_service.errors import (
    DbError,
    DbUnavailable,
    StatementTimeout,
    engine_error,
)
from paca_runtime.redact import redact_url

logger = logging.getLogger(__name__)


class _BrokenBeforeStart(Exception):
    """A pooled connection failed on BEGIN: the statement never reached the server."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _PgTransaction(TransactionSession):
    def __init__(self, backend: PostgresBackend, conn: Any) -> None:
        self._backend = backend
        self._conn = conn

    async def execute(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        max_rows: int,
        max_bytes: int,
        timeout_s: float | None,
    ) -> ResultSet:
        started = time.perf_counter()
        ok = False
        try:
            if timeout_s is not None:
                await set_timeout(self._conn, timeout_s)
            result = await fetch(self._conn, sql, params, max_rows=max_rows, max_bytes=max_bytes)
            if timeout_s is not None:
                await self._conn.execute("SET LOCAL statement_timeout TO DEFAULT")
            ok = True
            return result
        except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
            self._backend.errors += 1
            if isinstance(exc, STALE_STATEMENT) and is_stale(exc):
                # Too late for this transaction, but the next statement is prepared afresh.
                await forget_statements(self._conn)
            raise translate(exc) from exc
        finally:
            self._backend.queries += 1
            self._backend.figures.query(sql, started, ok=ok)

    async def command(self, sql: str) -> None:
        try:
            await self._conn.execute(sql)
        except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
            raise translate(exc) from exc


class _PgSession:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._conn.execute(sql, *params)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._conn.fetch(sql, *params)]

    async def execute_script(self, sql: str) -> None:
        await self._conn.execute(sql)

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self._conn.transaction()  # type: ignore[no-any-return]


class PostgresBackend(Backend):
    dialect = "postgresql"
    # Key of the advisory lock that serialises migration runners (any fixed 64-bit number).
    MIGRATION_LOCK_KEY = 0x7061636144420001

    def __init__(
        self,
        name: str,
        url: str,
        *,
        pool_size: int = 10,
        acquire_timeout_s: float = 5.0,
        limits: PoolLimits | None = None,
    ) -> None:
        super().__init__(
            name, url, pool_size=pool_size, acquire_timeout_s=acquire_timeout_s, limits=limits
        )
        self._pool: PgPool | None = None
        self._waiting = 0

    def __repr__(self) -> str:
        pool = self._pool
        size = pool.size if pool else 0
        idle = pool.idle if pool else 0
        return (
            f"<PostgresBackend db={self.name} url={redact_url(self.url)} size={size} idle={idle}>"
        )

    async def open(self) -> None:
        pool = PgPool(
            self.url,
            min_size=self.limits.min_size,
            max_size=self.limits.max_size,
            max_lifetime_s=self.limits.max_lifetime_s,
            idle_recycle_s=self.limits.idle_recycle_s,
            on_lost=self._lost_one,
        )
        try:
            await pool.open()
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise DbUnavailable(f"{self.name}: cannot connect to {redact_url(self.url)}") from exc
        self._pool = pool

    def _lost_one(self) -> None:
        self.figures.connections_discarded += 1
        logger.info("%s: a pooled connection ended; the pool will open another", self.name)

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _acquire(self) -> PgConnection:
        pool = self._pool
        if pool is None:
            raise DbUnavailable(f"{self.name}: not open")
        conn = pool.take_idle()
        if conn is not None:
            self.figures.acquired(0.0, waited=False)
            return conn
        # Waited: no connection was idle when asked (a busy pool, or one still to be opened).
        waited = pool.would_wait()
        started = time.perf_counter()
        self._waiting += 1
        try:
            conn = await pool.acquire(self.acquire_timeout_s)
        except TimeoutError:
            self.figures.acquire_timeouts += 1
            raise DbUnavailable(f"{self.name}: no connection free", retry_after_s=0.05) from None
        except UNAVAILABLE as exc:
            raise DbUnavailable(f"{self.name}: {exc}", retry_after_s=0.1) from exc
        finally:
            self._waiting -= 1
        self.figures.acquired(time.perf_counter() - started, waited=waited)
        return conn

    def _release(self, conn: PgConnection) -> None:
        if self._pool is None:
            conn.terminate()
        else:
            # A broken one is dropped by the pool, which opens another when a caller waits.
            self._pool.release(conn)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PgConnection]:
        conn = await self._acquire()
        try:
            if conn.pending_end:
                await conn.execute(conn.take_pending_end())
            yield conn
        finally:
            self._release(conn)

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
        self.queries += 1
        started = time.perf_counter()
        ok = False
        try:
            for connection_attempt in (1, 2):
                try:
                    result = await self._execute_once(
                        sql,
                        params,
                        read_only=read_only,
                        max_rows=max_rows,
                        max_bytes=max_bytes,
                        timeout_s=timeout_s,
                    )
                    ok = True
                    return result
                except _BrokenBeforeStart as broken:
                    # The connection had died idle in the pool (the server terminated it):
                    # nothing ran, so the statement is safe to send once more on a new one.
                    if connection_attempt == 2:
                        raise broken.error from broken.error.__cause__
                    logger.info("%s: a pooled connection was broken; retrying", self.name)
            raise AssertionError("unreachable")
        except DbError:  # already translated (some are OSErrors, like StatementTimeout)
            self.errors += 1
            raise
        except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
            self.errors += 1
            raise translate(exc) from exc
        finally:
            self.figures.query(sql, started, ok=ok)

    async def _execute_once(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        read_only: bool,
        max_rows: int,
        max_bytes: int,
        timeout_s: float | None,
    ) -> ResultSet:
        # Not ``_connection()``: a context manager is a measurable share of a small query.
        plain = read_only and PLAIN_READS and is_plain_read(sql)
        conn = await self._acquire()
        try:
            for attempt in (1, 2):
                begun = False
                try:
                    if plain:
                        # Nothing a plain read does outlives it: safe to send again.
                        return await read_plain(
                            conn,
                            sql,
                            params,
                            max_rows=max_rows,
                            max_bytes=max_bytes,
                            timeout_s=timeout_s,
                        )
                    await begin(conn, read_only=read_only, timeout_s=timeout_s)
                    begun = True
                    try:
                        result = await fetch(
                            conn, sql, params, max_rows=max_rows, max_bytes=max_bytes
                        )
                    except BaseException:
                        await abort(conn)
                        raise
                    await end(conn, read_only=read_only)
                    return result
                except STALE_STATEMENT as exc:
                    if attempt == 2 or not is_stale(exc):
                        raise
                    await forget_statements(conn)
                except TimeoutError:  # an OSError: before UNAVAILABLE
                    # A plain read past the caller's deadline: asyncpg has asked the server to
                    # cancel it, and the pool waits for that before lending the connection.
                    raise engine_error(
                        StatementTimeout("postgresql: canceling statement due to the deadline"),
                        "postgresql",
                        asyncpg.QueryCanceledError.sqlstate,
                    ) from None
                except (*UNAVAILABLE, asyncpg.InternalClientError) as exc:
                    if not begun and connection_lost(exc):
                        conn.broken()
                        raise _BrokenBeforeStart(exc) from exc
                    raise
            raise AssertionError("unreachable")
        finally:
            self._release(conn)

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
        self.queries += 1
        started = time.perf_counter()
        ok = False
        try:
            # A cursor lives in a transaction: a portal on the server, read chunk by chunk.
            async with self._connection() as conn, conn.transaction(readonly=True):
                await set_timeout(conn, timeout_s)
                statement = await conn.prepare(sql)
                params = bind(statement, params)
                attributes = statement.get_attributes()
                yield ResultSet(columns=columns_of(attributes))
                if not attributes:
                    return
                cursor = await statement.cursor(*params)
                async for rows in stream_chunks(
                    cursor.fetch,
                    row_encoder(attributes),
                    chunk_rows=chunk_rows,
                    chunk_bytes=chunk_bytes,
                    max_rows=max_rows,
                ):
                    self.rows_streamed += len(rows)
                    yield ResultSet(rows=rows)
            ok = True
        except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
            self.errors += 1
            raise translate(exc) from exc
        finally:
            self.figures.query(sql, started, ok=ok)

    async def executemany(
        self, sql: str, rows: Sequence[Sequence[Any]], *, timeout_s: float | None = None
    ) -> int:
        self.queries += 1
        started = time.perf_counter()
        ok = False
        try:
            async with self._connection() as conn:
                await begin(conn, read_only=False, timeout_s=timeout_s)
                try:
                    # asyncpg's executemany reports no counts: run the prepared statement per
                    # row inside one transaction and add up what each really wrote.
                    total = 0
                    statement = await conn.prepare(sql)
                    for row in rows:
                        await statement.fetch(*bind(statement, row))
                        total += max(0, rows_affected(statement.get_statusmsg()))
                except BaseException:
                    await abort(conn)
                    raise
                await end(conn, read_only=False)
            ok = True
            return total
        except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
            self.errors += 1
            raise translate(exc) from exc
        finally:
            self.figures.query(sql, started, ok=ok)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation, read_only: bool
    ) -> AsyncIterator[TransactionSession]:
        opening = "BEGIN"
        if isolation:
            opening += f" ISOLATION LEVEL {isolation}"
        opening += " READ ONLY" if read_only else " READ WRITE"
        async with self._connection() as conn:
            session = _PgTransaction(self, conn)
            await session.command(opening)
            self.figures.transactions_open += 1
            try:
                yield session
            finally:
                self.figures.transactions_open -= 1
                if not session.finished and not conn.is_closed():
                    # asyncpg's release would roll back too; done here so it is explicit and
                    # a failure shows (the connection is then dropped, not reused).
                    try:
                        await asyncio.shield(conn.execute("ROLLBACK"))
                    except Exception as exc:
                        logger.warning("%s: rollback failed (%r); closing", self.name, exc)
                        conn.terminate()

    @asynccontextmanager
    async def migration_session(self) -> AsyncIterator[_PgSession]:
        # A session-level advisory lock: released on unlock or when a crashed runner's
        # connection dies, so it cannot be left stuck.
        async with self._connection() as conn:
            # Migrations write outside explicit READ WRITE transactions too; the pool's reset
            # restores the read-only default when the connection comes back.
            await conn.execute("SET default_transaction_read_only = off")
            await conn.execute("SELECT pg_advisory_lock($1)", self.MIGRATION_LOCK_KEY)
            try:
                yield _PgSession(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", self.MIGRATION_LOCK_KEY)

    def pool_stats(self) -> db_types_pb2.PoolStats:
        pool = self._pool
        size = pool.size if pool else 0
        idle = pool.idle if pool else 0
        return db_types_pb2.PoolStats(
            database=self.name,
            host=redact_url(self.url),
            role="primary",
            state=db_types_pb2.HOST_STATE_HEALTHY,
            size=size,
            in_use=size - idle,
            idle=idle,
            waiting=self._waiting,
            queries=self.queries,
            errors=self.errors,
            query_p95_ms=self.figures.query_p95_ms(),
        )
