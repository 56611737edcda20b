"""PostgreSQL through an asyncpg pool.

Statements are prepared (asyncpg caches them per connection), rows come through a cursor so
``max_rows`` bounds what is read, and reads marked read-only run in a READ ONLY transaction so
the engine itself refuses a write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
from paca.db.v1 import db_types_pb2, values_pb2

from db_service import values
from db_service.backends.base import Backend, ResultSet, limit_bytes, stream_chunks
from db_service.errors import (
    BadStatement,
    ConstraintViolation,
    DbError,
    DbUnavailable,
    StatementTimeout,
    UniqueViolation,
    engine_error,
)
from paca_runtime.redact import redact_url

logger = logging.getLogger(__name__)

ColumnType = values_pb2.ColumnType

_TYPES = {
    "bool": ColumnType.COLUMN_TYPE_BOOL,
    "int2": ColumnType.COLUMN_TYPE_INT64,
    "int4": ColumnType.COLUMN_TYPE_INT64,
    "int8": ColumnType.COLUMN_TYPE_INT64,
    "float4": ColumnType.COLUMN_TYPE_DOUBLE,
    "float8": ColumnType.COLUMN_TYPE_DOUBLE,
    "numeric": ColumnType.COLUMN_TYPE_DECIMAL,
    "text": ColumnType.COLUMN_TYPE_STRING,
    "varchar": ColumnType.COLUMN_TYPE_STRING,
    "bpchar": ColumnType.COLUMN_TYPE_STRING,
    "name": ColumnType.COLUMN_TYPE_STRING,
    "bytea": ColumnType.COLUMN_TYPE_BYTES,
    "timestamp": ColumnType.COLUMN_TYPE_TIMESTAMP,
    "timestamptz": ColumnType.COLUMN_TYPE_TIMESTAMP,
    "date": ColumnType.COLUMN_TYPE_DATE,
    "time": ColumnType.COLUMN_TYPE_TIME,
    "json": ColumnType.COLUMN_TYPE_JSON,
    "jsonb": ColumnType.COLUMN_TYPE_JSON,
    "uuid": ColumnType.COLUMN_TYPE_UUID,
}


def _portable_type(kind: Any) -> values_pb2.ColumnType.ValueType:
    if kind.kind == "array":
        return ColumnType.COLUMN_TYPE_ARRAY
    return _TYPES.get(kind.name, ColumnType.COLUMN_TYPE_UNSPECIFIED)


_UNAVAILABLE = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


def _translate(exc: Exception) -> DbError:
    """The db_service error of a driver error, with the SQLSTATE attached."""
    error: DbError
    if isinstance(exc, asyncpg.QueryCanceledError):
        error = StatementTimeout(f"postgresql: {exc}")
    elif isinstance(exc, asyncpg.UniqueViolationError):
        error = UniqueViolation(str(exc))
    elif isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        error = ConstraintViolation(str(exc))
    elif isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        error = BadStatement("read_only", "a read-only statement tried to write")
    elif isinstance(exc, asyncpg.DataError):
        error = BadStatement("params", str(exc))
    elif isinstance(exc, _UNAVAILABLE):
        error = DbUnavailable(f"postgresql: {exc}", retry_after_s=0.1)
    else:
        error = BadStatement("sql", str(exc))
    return engine_error(error, "postgresql", getattr(exc, "sqlstate", None))


def _bind(statement: Any, params: Sequence[Any]) -> list[Any]:
    """Parameters as asyncpg takes them for the statement's parameter types.

    The wire carries every timestamp in UTC; a ``timestamp`` (without time zone) parameter is
    that UTC time without its zone, which asyncpg wants naive.
    """
    bound = list(params)
    for i, kind in enumerate(statement.get_parameters()):
        value = bound[i] if i < len(bound) else None
        if kind.name == "timestamp" and isinstance(value, dt.datetime) and value.tzinfo:
            bound[i] = value.astimezone(dt.UTC).replace(tzinfo=None)
    return bound


async def _set_timeout(conn: asyncpg.Connection, timeout_s: float | None) -> None:
    """Let the server cancel the transaction's statements after ``timeout_s``.

    ``SET LOCAL`` ends with the transaction, and a statement the server cancels leaves the
    connection healthy, so it goes back to the pool (unlike a client-side cancel).
    """
    if timeout_s is not None:
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")


@asynccontextmanager
async def _transaction(
    conn: asyncpg.Connection, *, read_only: bool, timeout_s: float | None
) -> AsyncIterator[None]:
    """A transaction whose BEGIN and statement timeout take one round trip, not two.

    asyncpg's ``conn.transaction()`` sends BEGIN on its own; a small query spends most of its
    time in round trips, so BEGIN and ``SET LOCAL statement_timeout`` go as one simple query.
    Ends with COMMIT, or ROLLBACK on any error or cancellation.
    """
    begin = "BEGIN READ ONLY" if read_only else "BEGIN"
    if timeout_s is not None:
        begin += f"; SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}"
    await conn.execute(begin)
    try:
        yield
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def _columns(attributes: Sequence[Any]) -> list[values_pb2.Column]:
    return [
        values_pb2.Column(name=a.name, type=_portable_type(a.type), db_type=a.type.name)
        for a in attributes
    ]


def _row_encoder(attributes: Sequence[Any]) -> Callable[[Any], values_pb2.Row]:
    json_columns = {i for i, a in enumerate(attributes) if a.type.name in {"json", "jsonb"}}

    def encode(record: Any) -> values_pb2.Row:
        return values_pb2.Row(
            values=[
                values.encode(values.JsonText(v) if i in json_columns and v is not None else v)
                for i, v in enumerate(record)
            ]
        )

    return encode


def _rows_affected(status: str | None) -> int:
    # "INSERT 0 3", "UPDATE 2", "SELECT 5": the count is the last word.
    last = (status or "").rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


# The server's answers when a cached statement no longer fits the schema or was deallocated
# (DISCARD ALL / DEALLOCATE by a client): drop the cache and retry once.
_STALE_STATEMENT = (
    asyncpg.FeatureNotSupportedError,
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.InvalidCachedStatementError,
)


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection whose prepared statements come from asyncpg's statement cache.

    The public ``prepare`` always prepares afresh (one round trip, a third of a small query's
    time); asyncpg's cache, which ``fetch`` uses, serves prepared statements through the
    parent class's ``_prepare``. A statement object is only valid while the connection is
    acquired (asyncpg checks), so the cache keeps the server-side state, not the object.
    """

    async def prepared(self, sql: str) -> Any:
        return await self._prepare(sql, use_cache=True)


def _stale(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.InvalidSQLStatementNameError | asyncpg.InvalidCachedStatementError):
        return True
    return isinstance(exc, asyncpg.FeatureNotSupportedError) and "cached plan" in str(exc)


def _release_done(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("returning a connection to the pool failed: %r", task.exception())


async def _release(conn_cm: Any) -> None:
    """Give a connection back to the pool, even when the caller is cancelled meanwhile.

    asyncpg's release resets the connection (a round trip); cancelled halfway it terminates
    the connection instead, so a burst of cancelled calls would empty the pool. Shielded, the
    reset finishes on its own and the caller's cancellation still goes through at once.
    """
    task = asyncio.ensure_future(conn_cm.__aexit__(None, None, None))
    task.add_done_callback(_release_done)
    await asyncio.shield(task)


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

    def __init__(self, name: str, url: str, *, pool_size: int, acquire_timeout_s: float) -> None:
        super().__init__(name, url, pool_size=pool_size, acquire_timeout_s=acquire_timeout_s)
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        pool = self._pool
        size = pool.get_size() if pool else 0
        idle = pool.get_idle_size() if pool else 0
        return (
            f"<PostgresBackend db={self.name} url={redact_url(self.url)} size={size} idle={idle}>"
        )

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=self.acquire_timeout_s,
                connection_class=_Connection,
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise DbUnavailable(f"{self.name}: cannot connect to {redact_url(self.url)}") from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise DbUnavailable(f"{self.name}: not open")
        try:
            conn_cm = self._pool.acquire(timeout=self.acquire_timeout_s)
            conn = await conn_cm.__aenter__()
        except TimeoutError:
            raise DbUnavailable(f"{self.name}: no connection free", retry_after_s=0.05) from None
        except _UNAVAILABLE as exc:
            raise DbUnavailable(f"{self.name}: {exc}", retry_after_s=0.1) from exc
        try:
            yield conn
        finally:
            await _release(conn_cm)

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
        try:
            async with self._connection() as conn:
                for attempt in (1, 2):
                    try:
                        async with _transaction(conn, read_only=read_only, timeout_s=timeout_s):
                            statement = await conn.prepared(sql)
                            bound = _bind(statement, params)
                            attributes = statement.get_attributes()
                            if not attributes:
                                await statement.fetch(*bound)
                                status = statement.get_statusmsg()
                                return ResultSet(rows_affected=_rows_affected(status))
                            # One round trip: bind and fetch at most max_rows + 1 rows.
                            fetched = []
                            async for record in statement.cursor(*bound, prefetch=max_rows + 1):
                                fetched.append(record)
                                if len(fetched) > max_rows:
                                    break
                            status = statement.get_statusmsg()
                        break
                    except _STALE_STATEMENT as exc:
                        if attempt == 2 or not _stale(exc):
                            raise
                        await conn.reload_schema_state()
        except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
            self.errors += 1
            raise _translate(exc) from exc
        encode = _row_encoder(attributes)
        rows, cut = limit_bytes([encode(r) for r in fetched[:max_rows]], max_bytes)
        affected = _rows_affected(status) if status and not status.startswith("SELECT") else -1
        return ResultSet(
            columns=_columns(attributes),
            rows=rows,
            rows_affected=affected,
            truncated=cut or len(fetched) > max_rows,
        )

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
        try:
            # A cursor lives in a transaction: a portal on the server, read chunk by chunk.
            async with self._connection() as conn, conn.transaction(readonly=True):
                await _set_timeout(conn, timeout_s)
                statement = await conn.prepare(sql)
                params = _bind(statement, params)
                attributes = statement.get_attributes()
                yield ResultSet(columns=_columns(attributes))
                if not attributes:
                    return
                cursor = await statement.cursor(*params)
                async for rows in stream_chunks(
                    cursor.fetch,
                    _row_encoder(attributes),
                    chunk_rows=chunk_rows,
                    chunk_bytes=chunk_bytes,
                    max_rows=max_rows,
                ):
                    self.rows_streamed += len(rows)
                    yield ResultSet(rows=rows)
        except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
            self.errors += 1
            raise _translate(exc) from exc

    async def executemany(
        self, sql: str, rows: Sequence[Sequence[Any]], *, timeout_s: float | None = None
    ) -> int:
        self.queries += 1
        try:
            async with self._connection() as conn, conn.transaction():
                await _set_timeout(conn, timeout_s)
                # asyncpg's executemany reports no counts: run the prepared statement per row
                # inside one transaction and add up what each really wrote.
                total = 0
                statement = await conn.prepare(sql)
                for row in rows:
                    await statement.fetch(*_bind(statement, row))
                    total += max(0, _rows_affected(statement.get_statusmsg()))
                return total
        except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
            self.errors += 1
            raise _translate(exc) from exc

    @asynccontextmanager
    async def migration_session(self) -> AsyncIterator[_PgSession]:
        # A session-level advisory lock: released on unlock or when a crashed runner's
        # connection dies, so it cannot be left stuck.
        async with self._connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", self.MIGRATION_LOCK_KEY)
            try:
                yield _PgSession(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", self.MIGRATION_LOCK_KEY)

    def pool_stats(self) -> db_types_pb2.PoolStats:
        pool = self._pool
        size = pool.get_size() if pool else 0
        idle = pool.get_idle_size() if pool else 0
        return db_types_pb2.PoolStats(
            database=self.name,
            host=redact_url(self.url),
            role="primary",
            state=db_types_pb2.HOST_STATE_HEALTHY,
            size=size,
            in_use=size - idle,
            idle=idle,
            queries=self.queries,
            errors=self.errors,
        )
