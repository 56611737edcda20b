"""SQLite through aiosqlite: WAL mode, one writer connection, a pool of read-only readers.

SQLite allows one writer at a time; funnelling writes through one connection under an asyncio
lock avoids "database is locked" churn, while WAL lets the readers run concurrently with it.
Connections run in autocommit mode and transactions are explicit. How values are stored and
read back: db_service.backends.sqlite_types.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
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
from db_service.backends.handoff import HandOff
from db_service.backends.sqlite_types import adapt, column_metadata, encode_row
from db_service.errors import (
    BadStatement,
    ConstraintViolation,
    DbError,
    DbUnavailable,
    StatementTimeout,
    UniqueViolation,
    engine_error,
)
from paca_runtime.errors import InvalidArgument


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or len(parts.path) < 2:
        raise InvalidArgument("url", f"not a sqlite:///path URL: {url!r}")
    return Path(parts.path[1:])


@asynccontextmanager
async def _statement_timeout(
    conn: aiosqlite.Connection, timeout_s: float | None
) -> AsyncIterator[None]:
    """Interrupt the connection's statements after ``timeout_s``.

    SQLite calls the progress handler every few thousand VM steps in the worker thread; the
    statement it interrupts fails with "interrupted" and the connection stays usable.
    """
    if timeout_s is None:
        yield
        return
    deadline = time.monotonic() + timeout_s
    await conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
    try:
        yield
    finally:
        await conn.set_progress_handler(None, 0)  # type: ignore[arg-type]


def _translate(exc: sqlite3.Error) -> DbError:
    """The db_service error of a driver error, with SQLite's extended result code name."""
    message = str(exc)
    name = getattr(exc, "sqlite_errorname", None)
    error: DbError
    if name == "SQLITE_INTERRUPT":
        error = StatementTimeout(f"sqlite: {message}")
    elif name in {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}:
        error = UniqueViolation(message)
    elif isinstance(exc, sqlite3.IntegrityError):
        error = ConstraintViolation(message)
    elif "locked" in message or "busy" in message:
        error = DbUnavailable(f"sqlite: {message}", retry_after_s=0.1)
    elif "readonly" in message:
        error = BadStatement("read_only", "a read-only statement tried to write")
    elif isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        error = BadStatement("params", message)
    else:
        error = BadStatement("sql", message)
    return engine_error(error, "sqlite", name)


async def _run(
    conn: aiosqlite.Connection,
    sql: str,
    bound: Sequence[Any],
    max_rows: int,
    max_bytes: int,
    timeout_s: float | None,
) -> ResultSet:
    """One statement on ``conn``; rows in wire form."""
    async with _statement_timeout(conn, timeout_s):
        cursor = await conn.execute(sql, bound)
        try:
            if cursor.description is None:
                return ResultSet(rows_affected=cursor.rowcount)
            fetched = list(await cursor.fetchmany(max_rows + 1))
            names = [d[0] for d in cursor.description]
        finally:
            await cursor.close()
    truncated = len(fetched) > max_rows
    fetched = fetched[:max_rows]
    rows, cut = limit_bytes([encode_row(row) for row in fetched], max_bytes)
    return ResultSet(
        columns=column_metadata(names, fetched),
        rows=rows,
        rows_affected=-1,
        truncated=truncated or cut,
    )


class _SqliteTransaction(TransactionSession):
    def __init__(self, backend: SqliteBackend, conn: aiosqlite.Connection) -> None:
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
        bound = [adapt(p, f"params[{i}]") for i, p in enumerate(params)]
        started = time.perf_counter()
        ok = False
        try:
            result = await _run(self._conn, sql, bound, max_rows, max_bytes, timeout_s)
            ok = True
            return result
        except sqlite3.Error as exc:
            self._backend.errors += 1
            raise _translate(exc) from exc
        finally:
            self._backend.queries += 1
            self._backend.figures.query(sql, started, ok=ok)

    async def command(self, sql: str) -> None:
        try:
            await self._conn.execute(sql)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc


class _SqliteSession:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._depth = 0

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._conn.execute(sql, [adapt(p, "params") for p in params])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = await self._conn.execute(sql, [adapt(p, "params") for p in params])
        return [tuple(row) for row in await cursor.fetchall()]

    async def execute_script(self, sql: str) -> None:
        for statement in split_statements(sql):
            await self._conn.execute(statement)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # The migration session already holds an exclusive transaction: nest with savepoints.
        self._depth += 1
        name = f"sp_{self._depth}"
        await self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self._conn.execute(f"ROLLBACK TO {name}")
            await self._conn.execute(f"RELEASE {name}")
            raise
        else:
            await self._conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1


class SqliteBackend(Backend):
    dialect = "sqlite"
    # RETURNING came with SQLite 3.35.
    returning = (
        frozenset({"insert", "update", "delete"})
        if sqlite3.sqlite_version_info >= (3, 35)
        else frozenset()
    )

    def __init__(
        self,
        name: str,
        url: str,
        *,
        pool_size: int = 10,
        acquire_timeout_s: float = 5.0,
        limits: PoolLimits | None = None,
    ) -> None:
        # A local file: connections do not age or break like network ones, so the pool is
        # max_size readers opened once and kept (lifetime and idle recycle do not apply).
        super().__init__(
            name, url, pool_size=pool_size, acquire_timeout_s=acquire_timeout_s, limits=limits
        )
        self.path = sqlite_path(url)
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: HandOff[aiosqlite.Connection] = HandOff()
        self._all_readers: list[aiosqlite.Connection] = []
        self._waiting = 0

    def __repr__(self) -> str:
        return (
            f"<SqliteBackend db={self.name} path={self.path} readers={len(self._all_readers)} "
            f"idle={self._readers.idle_count()} writer_busy={self._write_lock.locked()}>"
        )

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(
            self.path, isolation_level=None, detect_types=sqlite3.PARSE_DECLTYPES
        )
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            await self._writer.execute(f"PRAGMA {pragma}")
        await self._writer.execute("PRAGMA foreign_keys=ON")
        for _ in range(max(1, self.pool_size)):
            reader = await aiosqlite.connect(
                f"file:{self.path.resolve()}?mode=ro",
                uri=True,
                isolation_level=None,
                detect_types=sqlite3.PARSE_DECLTYPES,
            )
            await reader.execute("PRAGMA busy_timeout=5000")
            self._all_readers.append(reader)
            self._readers.put(reader)

    async def aclose(self) -> None:
        readers, self._all_readers = self._all_readers, []
        for reader in readers:
            await reader.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        waited = self._readers.would_wait()
        started = time.perf_counter()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout_s):
                conn = await self._readers.get()
        except TimeoutError:
            self.figures.acquire_timeouts += 1
            raise DbUnavailable(f"{self.name}: no reader free", retry_after_s=0.05) from None
        finally:
            self._waiting -= 1
        self.figures.acquired(time.perf_counter() - started, waited=waited)
        try:
            yield conn
        finally:
            self._readers.put(conn)

    @asynccontextmanager
    async def _writer_conn(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._writer is None:
            raise DbUnavailable(f"{self.name}: not open")
        waited = self._write_lock.locked()
        started = time.perf_counter()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout_s):
                await self._write_lock.acquire()
        except TimeoutError:
            self.figures.acquire_timeouts += 1
            raise DbUnavailable(f"{self.name}: writer busy", retry_after_s=0.05) from None
        finally:
            self._waiting -= 1
        self.figures.acquired(time.perf_counter() - started, waited=waited)
        try:
            yield self._writer
        finally:
            self._write_lock.release()

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
        bound = [adapt(p, f"params[{i}]") for i, p in enumerate(params)]
        self.queries += 1
        connection = self._reader() if read_only else self._writer_conn()
        started = time.perf_counter()
        ok = False
        try:
            async with connection as conn:
                result = await _run(conn, sql, bound, max_rows, max_bytes, timeout_s)
            ok = True
            return result
        except sqlite3.Error as exc:
            self.errors += 1
            raise _translate(exc) from exc
        finally:
            self.figures.query(sql, started, ok=ok)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation, read_only: bool
    ) -> AsyncIterator[TransactionSession]:
        # SQLite is serializable whatever the level asked. A read-only transaction reads one
        # snapshot on a reader; a writing one holds the single writer from BEGIN IMMEDIATE on.
        async with self._reader() if read_only else self._writer_conn() as conn:
            session = _SqliteTransaction(self, conn)
            await session.command("BEGIN" if read_only else "BEGIN IMMEDIATE")
            self.figures.transactions_open += 1
            try:
                yield session
            finally:
                self.figures.transactions_open -= 1
                if conn.in_transaction:
                    await asyncio.shield(conn.execute("ROLLBACK"))

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
        bound = [adapt(p, f"params[{i}]") for i, p in enumerate(params)]
        self.queries += 1
        try:
            async with self._reader() as conn, _statement_timeout(conn, timeout_s):
                cursor = await conn.execute(sql, bound)
                try:
                    names = [d[0] for d in cursor.description or ()]
                    # Column types come from values, so the first chunk is read before the
                    # columns are announced.
                    first = list(await cursor.fetchmany(min(chunk_rows, max_rows or chunk_rows)))
                    yield ResultSet(columns=column_metadata(names, first))
                    if first:
                        pending: list[Any] = first

                        async def fetch(n: int) -> Sequence[Any]:
                            nonlocal pending
                            if pending:
                                head, pending = pending[:n], pending[n:]
                                return head
                            return list(await cursor.fetchmany(n))

                        async for rows in stream_chunks(
                            fetch,
                            encode_row,
                            chunk_rows=chunk_rows,
                            chunk_bytes=chunk_bytes,
                            max_rows=max_rows,
                        ):
                            self.rows_streamed += len(rows)
                            yield ResultSet(rows=rows)
                finally:
                    await cursor.close()
        except sqlite3.Error as exc:
            self.errors += 1
            raise _translate(exc) from exc

    async def executemany(
        self, sql: str, rows: Sequence[Sequence[Any]], *, timeout_s: float | None = None
    ) -> int:
        bound = [[adapt(v, "params") for v in row] for row in rows]
        self.queries += 1
        try:
            async with self._writer_conn() as conn, _statement_timeout(conn, timeout_s):
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    cursor = await conn.executemany(sql, bound)
                    affected = cursor.rowcount
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            self.errors += 1
            raise _translate(exc) from exc
        return affected

    @asynccontextmanager
    async def migration_session(self) -> AsyncIterator[_SqliteSession]:
        # An exclusive transaction is SQLite's lock: a second runner in another process waits
        # on busy_timeout, and a crashed runner's lock dies with its connection.
        async with self._writer_conn() as conn:
            await conn.execute("BEGIN EXCLUSIVE")
            try:
                yield _SqliteSession(conn)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    def pool_stats(self) -> db_types_pb2.PoolStats:
        idle = self._readers.idle_count() + (0 if self._write_lock.locked() else 1)
        size = len(self._all_readers) + 1
        return db_types_pb2.PoolStats(
            database=self.name,
            host=str(self.path),
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
