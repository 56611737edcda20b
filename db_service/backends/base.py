"""The interface every database engine implements, and the results it returns.

Engines differ in placeholders, types and locking; the servicer, the call-log store and the
migration runner only see :class:`Backend` and :class:`Session`, and pick dialect-specific SQL by
``Backend.dialect``.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from paca.db.v1 import db_types_pb2, values_pb2

from db_service.figures import DbFigures
from db_service.tracing import trace_statements, trace_transaction_statements


@dataclass(slots=True)
class ResultSet:
    """Rows of one statement, already in wire form."""

    columns: list[values_pb2.Column] = field(default_factory=list)
    rows: list[values_pb2.Row] = field(default_factory=list)
    rows_affected: int = -1
    truncated: bool = False


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements, respecting quotes, comments and triggers.

    SQLite's tokenizer (``sqlite3.complete_statement``) knows quotes of every engine we serve
    ('', "", ``) and comments, so it splits MySQL scripts too; drivers that take one statement
    per call run them one by one.
    """
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


def limit_bytes(rows: list[values_pb2.Row], max_bytes: int) -> tuple[list[values_pb2.Row], bool]:
    """The leading rows that fit in ``max_bytes`` (at least one), and whether any were cut."""
    if max_bytes <= 0 or len(rows) < 2:
        # The first row is kept whatever its size: one row needs no measuring.
        return rows, False
    total = 0
    for i, row in enumerate(rows):
        total += row.ByteSize()
        if total > max_bytes and i > 0:
            return rows[:i], True
    return rows, False


async def stream_chunks(
    fetch: Callable[[int], Awaitable[Sequence[Any]]],
    encode: Callable[[Any], values_pb2.Row],
    *,
    chunk_rows: int,
    chunk_bytes: int,
    max_rows: int,
) -> AsyncIterator[list[values_pb2.Row]]:
    """Chunks of encoded rows from a cursor's ``fetch(n)``, each at most ``chunk_rows`` rows and
    about ``chunk_bytes`` bytes; reads the next batch only when the consumer asks for more."""
    sent = 0
    while not max_rows or sent < max_rows:
        want = chunk_rows if not max_rows else min(chunk_rows, max_rows - sent)
        records = await fetch(want)
        if not records:
            return
        chunk: list[values_pb2.Row] = []
        size = 0
        for record in records:
            row = encode(record)
            chunk.append(row)
            size += row.ByteSize()
            if size >= chunk_bytes:
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk
        sent += len(records)
        if len(records) < want:
            return


class Session(Protocol):
    """One connection held for a unit of work (migrations), in the engine's placeholder style."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def execute_script(self, sql: str) -> None:
        """Run several statements separated by semicolons."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """All statements inside commit together or not at all."""
        ...


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """A database's pool: how many connections, how long to wait for one, when to renew one."""

    min_size: int = 1
    max_size: int = 10
    acquire_timeout_s: float = 5.0
    max_lifetime_s: float = 3600.0
    idle_recycle_s: float = 300.0


# Isolation levels by their SQL names ("READ COMMITTED", ...); None: the engine's default.
Isolation = str | None


class TransactionSession(abc.ABC):
    """One open transaction on a connection held for it (DbService.Transaction).

    Statements run in order; savepoint names are validated by the caller. After ``commit`` or
    ``rollback`` the session is finished; leaving ``Backend.transaction`` unfinished rolls back.
    """

    finished = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each statement of a transaction is a DB client span (see db_service.tracing); an
        # engine's session keeps the backend it runs on as ``_backend``.
        super().__init_subclass__(**kwargs)
        trace_transaction_statements(cls)

    @abc.abstractmethod
    async def execute(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        max_rows: int,
        max_bytes: int,
        timeout_s: float | None,
    ) -> ResultSet: ...

    @abc.abstractmethod
    async def command(self, sql: str) -> None:
        """Run a fixed control statement (SAVEPOINT x, COMMIT, ...)."""

    async def savepoint(self, name: str) -> None:
        await self.command(f"SAVEPOINT {name}")

    async def rollback_to(self, name: str) -> None:
        await self.command(f"ROLLBACK TO SAVEPOINT {name}")

    async def release(self, name: str) -> None:
        await self.command(f"RELEASE SAVEPOINT {name}")

    async def commit(self) -> None:
        await self.command("COMMIT")
        self.finished = True

    async def rollback(self) -> None:
        await self.command("ROLLBACK")
        self.finished = True


class Backend(abc.ABC):
    """A named database on one engine, with its connection pool.

    Lifecycle: ``open()`` once, any number of statements, ``aclose()`` (idempotent).
    """

    dialect: ClassVar[str]
    # Statement kinds ("insert", "update", "delete") that take a RETURNING clause on this engine.
    returning: frozenset[str] = frozenset({"insert", "update", "delete"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every engine's statements become DB client spans (see db_service.tracing).
        super().__init_subclass__(**kwargs)
        trace_statements(cls)

    def __init__(
        self,
        name: str,
        url: str,
        *,
        pool_size: int = 10,
        acquire_timeout_s: float = 5.0,
        limits: PoolLimits | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.limits = limits or PoolLimits(max_size=pool_size, acquire_timeout_s=acquire_timeout_s)
        self.pool_size = self.limits.max_size
        self.acquire_timeout_s = self.limits.acquire_timeout_s
        self.figures = DbFigures(name)
        self.queries = 0
        self.errors = 0
        # Rows handed to StreamQuery consumers so far (back-pressure shows as this pausing).
        self.rows_streamed = 0

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    @abc.abstractmethod
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
        """Run one statement; errors are translated to db_service errors.

        Args:
            max_rows: Rows returned at most; ``truncated`` tells when more matched.
            max_bytes: Approximate bytes of rows returned at most (0: no limit).
            timeout_s: The engine cancels the statement after this long (StatementTimeout);
                the connection stays in the pool where the engine allows.
        """

    @abc.abstractmethod
    async def executemany(
        self, sql: str, rows: Sequence[Sequence[Any]], *, timeout_s: float | None = None
    ) -> int:
        """Run one statement for many parameter rows in one transaction; rows affected."""

    @abc.abstractmethod
    def stream(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        chunk_rows: int,
        chunk_bytes: int,
        max_rows: int = 0,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[ResultSet, None]:
        """Rows of a read-only statement in chunks, read from a server-side cursor.

        The connection is held while the iterator lives; the next chunk is read from the engine
        only when the consumer asks for it, so a slow consumer slows the cursor. Close the
        iterator (``contextlib.aclosing``) to give the connection back early. The first chunk
        carries the columns (and may have no rows).
        """

    @abc.abstractmethod
    def transaction(
        self, *, isolation: Isolation, read_only: bool
    ) -> AbstractAsyncContextManager[TransactionSession]:
        """A transaction on a connection held until the context exits.

        Exiting without commit or rollback (an error, a cancelled caller) rolls back; the
        connection returns to the pool, or is discarded when it broke.
        """

    @abc.abstractmethod
    def migration_session(self) -> AbstractAsyncContextManager[Session]:
        """A session holding the engine's migration lock, so one runner migrates at a time."""

    @abc.abstractmethod
    def pool_stats(self) -> db_types_pb2.PoolStats: ...
