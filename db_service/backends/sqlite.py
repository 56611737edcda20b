"""SQLite through aiosqlite: WAL mode, one writer connection, a pool of read-only readers.

SQLite allows one writer at a time; funnelling writes through one connection under an asyncio
lock avoids "database is locked" churn, while WAL lets the readers run concurrently with it.
Connections run in autocommit mode and transactions are explicit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
from paca.db.v1 import db_types_pb2, values_pb2

from db_service import values
from db_service.backends.base import Backend, ResultSet
from db_service.errors import BadStatement, ConstraintViolation, DbUnavailable
from paca_runtime.errors import InvalidArgument


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or len(parts.path) < 2:
        raise InvalidArgument("url", f"not a sqlite:///path URL: {url!r}")
    return Path(parts.path[1:])


def _adapt(value: Any, field: str) -> Any:
    """SQLite stores five types; everything else goes in as its text form."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal | uuid.UUID | values.JsonText):
        return str(value)
    if isinstance(value, dt.datetime):
        # One sortable text form, the same as the schema's strftime defaults.
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        raise InvalidArgument(field, "SQLite has no array type")
    return value


def _translate(exc: sqlite3.Error) -> Exception:
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return ConstraintViolation(message)
    if "locked" in message or "busy" in message:
        return DbUnavailable(f"sqlite: {message}", retry_after_s=0.1)
    if "readonly" in message:
        return BadStatement("read_only", "a read-only statement tried to write")
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return BadStatement("params", message)
    return BadStatement("sql", message)


class _SqliteSession:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._depth = 0

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._conn.execute(sql, [_adapt(p, "params") for p in params])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = await self._conn.execute(sql, [_adapt(p, "params") for p in params])
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


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements, respecting quotes and triggers."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not buffer.strip().startswith("--"):
        statements.append(buffer.strip())
    return statements


class SqliteBackend(Backend):
    dialect = "sqlite"

    def __init__(self, name: str, url: str, *, pool_size: int, acquire_timeout_s: float) -> None:
        super().__init__(name, url, pool_size=pool_size, acquire_timeout_s=acquire_timeout_s)
        self.path = sqlite_path(url)
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._waiting = 0

    def __repr__(self) -> str:
        return (
            f"<SqliteBackend db={self.name} path={self.path} readers={len(self._all_readers)} "
            f"idle={self._readers.qsize()} writer_busy={self._write_lock.locked()}>"
        )

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            await self._writer.execute(f"PRAGMA {pragma}")
        await self._writer.execute("PRAGMA foreign_keys=ON")
        for _ in range(max(1, self.pool_size)):
            reader = await aiosqlite.connect(
                f"file:{self.path.resolve()}?mode=ro", uri=True, isolation_level=None
            )
            await reader.execute("PRAGMA busy_timeout=5000")
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)

    async def aclose(self) -> None:
        readers, self._all_readers = self._all_readers, []
        for reader in readers:
            await reader.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        self._waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout_s):
                conn = await self._readers.get()
        except TimeoutError:
            raise DbUnavailable(f"{self.name}: no reader free", retry_after_s=0.05) from None
        finally:
            self._waiting -= 1
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    @asynccontextmanager
    async def _writer_conn(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._writer is None:
            raise DbUnavailable(f"{self.name}: not open")
        self._waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout_s):
                await self._write_lock.acquire()
        except TimeoutError:
            raise DbUnavailable(f"{self.name}: writer busy", retry_after_s=0.05) from None
        finally:
            self._waiting -= 1
        try:
            yield self._writer
        finally:
            self._write_lock.release()

    async def execute(
        self, sql: str, params: Sequence[Any], *, read_only: bool, max_rows: int
    ) -> ResultSet:
        bound = [_adapt(p, f"params[{i}]") for i, p in enumerate(params)]
        self.queries += 1
        connection = self._reader() if read_only else self._writer_conn()
        try:
            async with connection as conn:
                cursor = await conn.execute(sql, bound)
                try:
                    if cursor.description is None:
                        return ResultSet(rows_affected=cursor.rowcount)
                    fetched = list(await cursor.fetchmany(max_rows + 1))
                    names = [d[0] for d in cursor.description]
                finally:
                    await cursor.close()
        except sqlite3.Error as exc:
            self.errors += 1
            raise _translate(exc) from exc
        truncated = len(fetched) > max_rows
        rows = [
            values_pb2.Row(values=[values.encode(v) for v in row]) for row in fetched[:max_rows]
        ]
        columns = [values_pb2.Column(name=n) for n in names]
        for i, column in enumerate(columns):
            for row in rows:
                kind = values.column_type_of(row.values[i])
                if kind:
                    column.type = kind
                    break
        return ResultSet(columns=columns, rows=rows, rows_affected=-1, truncated=truncated)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        bound = [[_adapt(v, "params") for v in row] for row in rows]
        self.queries += 1
        try:
            async with self._writer_conn() as conn:
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
        idle = self._readers.qsize() + (0 if self._write_lock.locked() else 1)
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
        )
