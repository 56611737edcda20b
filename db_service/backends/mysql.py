"""MySQL and MariaDB through an aiomysql pool.

Connections run in autocommit mode with the session time zone at UTC (so TIMESTAMP columns store
and return UTC, and DATETIME values are read as UTC like the other engines); a statement marked
read-only runs in ``START TRANSACTION READ ONLY`` so the engine itself refuses a write. Rows come
through an unbuffered (server-side) cursor, so ``max_rows`` bounds what is held in memory.

Column typing (BOOLEAN, JSON and UUID columns the wire protocol does not name) and parameter
adaptation live in :mod:`db_service.backends.mysql_types`, error numbers in
:mod:`db_service.backends.mysql_errors`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql
from paca.db.v1 import db_types_pb2

from db_service.backends.base import (
    Backend,
    Isolation,
    PoolLimits,
    ResultSet,
    TransactionSession,
    limit_bytes,
    split_statements,
    stream_chunks,
)
from db_service.backends.mysql_errors import LOST_ARGS, server_error, translate
from db_service.backends.mysql_types import ColumnCatalog, RowDecoder, adapt_param
from db_service.errors import (
    DbUnavailable,
)
from paca_runtime.errors import InvalidArgument
from paca_runtime.redact import redact_url

logger = logging.getLogger(__name__)


def connect_kwargs(url: str) -> dict[str, Any]:
    """aiomysql.connect arguments of a ``mysql://user:pass@host:port/db`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"mysql", "mariadb"} or not parts.hostname:
        raise InvalidArgument("url", f"not a mysql://user:pass@host:port/db URL: {redact_url(url)}")
    return {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "db": unquote(parts.path.lstrip("/")) or None,
        "charset": "utf8mb4",
        "autocommit": True,
        "init_command": "SET time_zone = '+00:00'",
    }


class _Cursor(aiomysql.SSCursor):  # type: ignore[misc]
    """Unbuffered cursor that keeps engine warnings out of Python's warnings machinery.

    aiomysql turns every server note ("Unknown table" on DROP IF EXISTS, ...) into a Python
    warning, which callers of a server cannot act on; strict SQL mode already makes real data
    problems errors.
    """

    async def _show_warnings(self, conn: Any) -> None:
        return None


class _BufferedCursor(_Cursor, aiomysql.Cursor):  # type: ignore[misc]
    """Buffered twin of :class:`_Cursor`, for small bookkeeping queries."""


def _returning(version: str) -> frozenset[str]:
    """Statements with RETURNING: MariaDB has DELETE ... RETURNING since 10.0 and INSERT since
    10.5, never UPDATE; MySQL has none."""
    # Older MariaDB servers announce themselves as "5.5.5-10.4.1-MariaDB".
    match = re.search(r"(\d+)\.(\d+)\.\d+-MariaDB", version, re.IGNORECASE)
    if match is None:
        return frozenset()
    major, minor = int(match.group(1)), int(match.group(2))
    return frozenset({"insert", "delete"} if (major, minor) >= (10, 5) else {"delete"})


class MysqlBackend(Backend):
    dialect = "mysql"
    # Name of the GET_LOCK lock that serialises migration runners; the server frees it when
    # the holding connection ends, so a crashed runner cannot leave it stuck.
    MIGRATION_LOCK = "paca_schema_migrations"
    MIGRATION_LOCK_WAIT_S = 600

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
        # When each pooled connection was first lent (its age for max lifetime; aiomysql has no
        # hook at connect), by id.
        self._opened: dict[int, float] = {}
        self._kwargs = connect_kwargs(url)
        self._pool: aiomysql.Pool | None = None
        self._waiting = 0
        self.mariadb = True
        self.catalog = ColumnCatalog(mariadb=True)

    def __repr__(self) -> str:
        pool = self._pool
        size, idle = (pool.size, pool.freesize) if pool else (0, 0)
        return (
            f"<MysqlBackend db={self.name} url={redact_url(self.url)} size={size} idle={idle}"
            f" waiting={self._waiting}>"
        )

    async def open(self) -> None:
        try:
            self._pool = await aiomysql.create_pool(
                minsize=min(self.limits.min_size, self.limits.max_size),
                maxsize=self.limits.max_size,
                # aiomysql closes a connection idle for longer than this instead of lending it.
                pool_recycle=int(self.limits.idle_recycle_s),
                **self._kwargs,
            )
            async with self._connection() as conn:
                version = conn.get_server_info()
        except (pymysql.Error, OSError) as exc:
            await self.aclose()
            raise DbUnavailable(f"{self.name}: cannot connect to {redact_url(self.url)}") from exc
        self.mariadb = "mariadb" in version.lower()
        self.catalog = ColumnCatalog(mariadb=self.mariadb)
        self.returning = _returning(version)

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            await pool.wait_closed()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomysql.Connection]:
        if self._pool is None:
            raise DbUnavailable(f"{self.name}: not open")
        pool = self._pool
        self._count_lost(pool)
        # Waited: no connection was idle when asked (a busy pool, or one still to be opened).
        waited = pool.freesize == 0
        started = time.perf_counter()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout_s):
                conn = await pool.acquire()
        except TimeoutError:
            self.figures.acquire_timeouts += 1
            raise DbUnavailable(f"{self.name}: no connection free", retry_after_s=0.05) from None
        except (pymysql.Error, OSError) as exc:
            raise DbUnavailable(f"{self.name}: cannot connect: {exc}", retry_after_s=0.1) from exc
        finally:
            self._waiting -= 1
        self.figures.acquired(time.perf_counter() - started, waited=waited)
        opened = self._opened.setdefault(id(conn), time.monotonic())
        try:
            yield conn
        except BaseException as exc:
            # A connection left mid-result, mid-transaction or broken is not handed out again;
            # after an error the server reported, it is as good as before.
            if not server_error(exc):
                conn.close()
                self.figures.connections_discarded += 1
            raise
        finally:
            if not conn.closed and time.monotonic() - opened > self.limits.max_lifetime_s:
                conn.close()
            if conn.closed:
                self._opened.pop(id(conn), None)
            pool.release(conn)

    def _count_lost(self, pool: aiomysql.Pool) -> None:
        """Count idle connections the server ended (KILL, restart); aiomysql's acquire drops
        them silently, the same check it makes."""
        for conn in pool._free:
            reader = conn._reader
            if (reader.at_eof() or reader.exception()) and id(conn) in self._opened:
                del self._opened[id(conn)]
                self.figures.connections_discarded += 1

    def _bind(self, params: Sequence[Any]) -> list[Any] | None:
        # Without parameters PyMySQL leaves the SQL alone, so a literal "%" needs no doubling.
        return [adapt_param(p, f"params[{i}]") for i, p in enumerate(params)] or None

    @asynccontextmanager
    async def _statement_timeout(
        self, conn: aiomysql.Connection, sql: str, timeout_s: float | None
    ) -> AsyncIterator[str]:
        """``sql`` made to be cancelled by the server after ``timeout_s``.

        The server stops the statement and the connection stays usable. MariaDB scopes the limit
        to the one statement (``SET STATEMENT ... FOR``); MySQL takes it as a session variable,
        set for the statement and reset after.
        """
        if timeout_s is None:
            yield sql
        elif self.mariadb:
            yield f"SET STATEMENT max_statement_time={max(0.001, timeout_s):.3f} FOR {sql}"
        else:
            await conn.query(f"SET SESSION max_execution_time = {max(1, int(timeout_s * 1000))}")
            try:
                yield sql
            finally:
                await conn.query("SET SESSION max_execution_time = 0")

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
        bound = self._bind(params)
        self.queries += 1
        started = time.perf_counter()
        ok = False
        try:
            for attempt in (1, 2):
                try:
                    async with self._connection() as conn:
                        if read_only:
                            await conn.query("START TRANSACTION READ ONLY")
                        try:
                            result = await self._run(
                                conn, sql, bound, max_rows, max_bytes, timeout_s
                            )
                        finally:
                            if read_only:
                                await conn.query("COMMIT")
                    ok = True
                    return result
                except pymysql.OperationalError as exc:
                    # A read on a connection the server had dropped (KILL, restart): safe to
                    # send again on a fresh connection; a write may have run, so it is not.
                    if attempt == 2 or not read_only or exc.args[:1] not in LOST_ARGS:
                        raise
                    logger.info("%s: a pooled connection was broken; retrying", self.name)
            raise AssertionError("unreachable")
        except (pymysql.Error, OSError) as exc:
            self.errors += 1
            raise translate(exc) from exc
        finally:
            self.figures.query(sql, started, ok=ok)

    async def _run(
        self,
        conn: aiomysql.Connection,
        sql: str,
        bound: list[Any] | None,
        max_rows: int,
        max_bytes: int,
        timeout_s: float | None,
    ) -> ResultSet:
        """One statement on ``conn``; rows in wire form."""
        async with (
            self._statement_timeout(conn, sql, timeout_s) as timed,
            conn.cursor(_Cursor) as cursor,
        ):
            await cursor.execute(timed, bound)
            if cursor.description is None:
                affected = cursor.rowcount
                fetched: list[Any] = []
                fields: list[Any] = []
            else:
                fetched = list(await cursor.fetchmany(max_rows + 1))
                fields = list(cursor._result.fields)
        for schema, table in self.catalog.needs(fields):
            async with conn.cursor(_BufferedCursor) as catalog_cursor:
                await self.catalog.load(catalog_cursor, schema, table)
        if not fields:
            return ResultSet(rows_affected=affected)
        decoder = RowDecoder(fields, self.catalog)
        rows, cut = limit_bytes([decoder.row(r) for r in fetched[:max_rows]], max_bytes)
        return ResultSet(
            columns=decoder.columns,
            rows=rows,
            rows_affected=-1,
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
        bound = self._bind(params)
        self.queries += 1
        try:
            async with self._connection() as conn:
                await conn.query("START TRANSACTION READ ONLY")
                async with (
                    self._statement_timeout(conn, sql, timeout_s) as timed,
                    conn.cursor(_Cursor) as cursor,
                ):
                    await cursor.execute(timed, bound)
                    fields = list(cursor._result.fields) if cursor.description else []
                    missing = self.catalog.needs(fields)
                    if missing:
                        # This connection is busy with the unbuffered result: look the tables up
                        # on a connection of their own (once per table, then cached).
                        await self._load_catalog(missing)
                    decoder = RowDecoder(fields, self.catalog)
                    yield ResultSet(columns=decoder.columns)
                    if fields:
                        async for rows in stream_chunks(
                            cursor.fetchmany,
                            decoder.row,
                            chunk_rows=chunk_rows,
                            chunk_bytes=chunk_bytes,
                            max_rows=max_rows,
                        ):
                            self.rows_streamed += len(rows)
                            yield ResultSet(rows=rows)
                await conn.query("COMMIT")
        except (pymysql.Error, OSError) as exc:
            self.errors += 1
            raise translate(exc) from exc

    async def _load_catalog(self, tables: set[tuple[str, str]]) -> None:
        conn = await aiomysql.connect(**self._kwargs)
        try:
            for schema, table in tables:
                async with conn.cursor(_BufferedCursor) as cursor:
                    await self.catalog.load(cursor, schema, table)
        finally:
            conn.close()

    async def executemany(
        self, sql: str, rows: Sequence[Sequence[Any]], *, timeout_s: float | None = None
    ) -> int:
        bound = [[adapt_param(v, "params") for v in row] for row in rows]
        self.queries += 1
        try:
            async with self._connection() as conn:
                await conn.begin()
                try:
                    async with (
                        self._statement_timeout(conn, sql, timeout_s) as timed,
                        conn.cursor(_BufferedCursor) as cursor,
                    ):
                        # PyMySQL sends an INSERT ... VALUES as one multi-row statement.
                        affected = await cursor.executemany(timed, bound)
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
        except (pymysql.Error, OSError) as exc:
            self.errors += 1
            raise translate(exc) from exc
        return int(affected or 0)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation, read_only: bool
    ) -> AsyncIterator[TransactionSession]:
        async with self._connection() as conn:
            session = _MysqlTransaction(self, conn)
            if isolation:
                # Applies to the next transaction only.
                await session.command(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            await session.command("START TRANSACTION READ ONLY" if read_only else "BEGIN")
            self.figures.transactions_open += 1
            try:
                yield session
            finally:
                self.figures.transactions_open -= 1
                if not session.finished and not conn.closed:
                    try:
                        await asyncio.shield(conn.rollback())
                    except Exception as exc:
                        logger.warning("%s: rollback failed (%r); closing", self.name, exc)
                        conn.close()

    @asynccontextmanager
    async def migration_session(self) -> AsyncIterator[_MysqlSession]:
        async with self._connection() as conn:
            session = _MysqlSession(conn)
            got = await session.fetch(
                "SELECT GET_LOCK(%s, %s)", (self.MIGRATION_LOCK, self.MIGRATION_LOCK_WAIT_S)
            )
            if not got or got[0][0] != 1:
                raise DbUnavailable(f"{self.name}: migration lock not granted", retry_after_s=1)
            try:
                yield session
            finally:
                await session.execute("SELECT RELEASE_LOCK(%s)", (self.MIGRATION_LOCK,))

    def pool_stats(self) -> db_types_pb2.PoolStats:
        pool = self._pool
        size, idle = (pool.size, pool.freesize) if pool else (0, 0)
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


class _MysqlTransaction(TransactionSession):
    def __init__(self, backend: MysqlBackend, conn: aiomysql.Connection) -> None:
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
        bound = self._backend._bind(params)
        started = time.perf_counter()
        ok = False
        try:
            result = await self._backend._run(
                self._conn, sql, bound, max_rows, max_bytes, timeout_s
            )
            ok = True
            return result
        except (pymysql.Error, OSError) as exc:
            self._backend.errors += 1
            raise translate(exc) from exc
        finally:
            self._backend.queries += 1
            self._backend.figures.query(sql, started, ok=ok)

    async def command(self, sql: str) -> None:
        try:
            await self._conn.query(sql)
        except (pymysql.Error, OSError) as exc:
            raise translate(exc) from exc


class _MysqlSession:
    """A held connection for migrations. DDL commits implicitly in MySQL, so a migration's
    transaction only protects its data statements and the bookkeeping row."""

    def __init__(self, conn: aiomysql.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with self._conn.cursor(_BufferedCursor) as cursor:
            await cursor.execute(sql, [adapt_param(p, "params") for p in params] or None)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._conn.cursor(_BufferedCursor) as cursor:
            await cursor.execute(sql, [adapt_param(p, "params") for p in params] or None)
            return [tuple(row) for row in await cursor.fetchall()]

    async def execute_script(self, sql: str) -> None:
        for statement in split_statements(sql):
            await self.execute(statement)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self._conn.begin()
        try:
            yield
        except BaseException:
            await self._conn.rollback()
            raise
        await self._conn.commit()
