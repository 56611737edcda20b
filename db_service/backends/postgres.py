"""PostgreSQL through an asyncpg pool.

Statements are prepared (asyncpg caches them per connection), rows come through a cursor so
``max_rows`` bounds what is read, and reads marked read-only run in a READ ONLY transaction so
the engine itself refuses a write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
from paca.db.v1 import db_types_pb2, values_pb2

from db_service import values
from db_service.backends.base import Backend, ResultSet
from db_service.errors import BadStatement, ConstraintViolation, DbUnavailable, StatementTimeout
from paca_runtime.redact import redact_url

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

_UNAVAILABLE = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, asyncpg.QueryCanceledError):
        return StatementTimeout(str(exc))
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return ConstraintViolation(str(exc))
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return BadStatement("read_only", "a read-only statement tried to write")
    if isinstance(exc, asyncpg.DataError):
        return BadStatement("params", str(exc))
    if isinstance(exc, _UNAVAILABLE):
        return DbUnavailable(f"postgresql: {exc}", retry_after_s=0.1)
    return BadStatement("sql", str(exc))


def _rows_affected(status: str | None) -> int:
    # "INSERT 0 3", "UPDATE 2", "SELECT 5": the count is the last word.
    last = (status or "").rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


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
                self.url, min_size=1, max_size=self.pool_size, timeout=self.acquire_timeout_s
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
            await conn_cm.__aexit__(None, None, None)

    async def execute(
        self, sql: str, params: Sequence[Any], *, read_only: bool, max_rows: int
    ) -> ResultSet:
        self.queries += 1
        try:
            async with self._connection() as conn, conn.transaction(readonly=read_only):
                statement = await conn.prepare(sql)
                attributes = statement.get_attributes()
                if not attributes:
                    await statement.fetch(*params)
                    return ResultSet(rows_affected=_rows_affected(statement.get_statusmsg()))
                cursor = await statement.cursor(*params)
                fetched = await cursor.fetch(max_rows + 1)
                status = statement.get_statusmsg()
        except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
            self.errors += 1
            raise _translate(exc) from exc
        columns = [
            values_pb2.Column(
                name=a.name,
                type=_TYPES.get(a.type.name, ColumnType.COLUMN_TYPE_UNSPECIFIED),
                db_type=a.type.name,
            )
            for a in attributes
        ]
        json_columns = {i for i, a in enumerate(attributes) if a.type.name in {"json", "jsonb"}}
        rows = [
            values_pb2.Row(
                values=[
                    values.encode(values.JsonText(v) if i in json_columns and v is not None else v)
                    for i, v in enumerate(record)
                ]
            )
            for record in fetched[:max_rows]
        ]
        affected = _rows_affected(status) if status and not status.startswith("SELECT") else -1
        return ResultSet(
            columns=columns, rows=rows, rows_affected=affected, truncated=len(fetched) > max_rows
        )

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        self.queries += 1
        try:
            async with self._connection() as conn, conn.transaction():
                # asyncpg's executemany reports no counts: run the prepared statement per row
                # inside one transaction and add up what each really wrote.
                total = 0
                statement = await conn.prepare(sql)
                for row in rows:
                    await statement.fetch(*row)
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
