"""The interface every database engine implements, and the results it returns.

Engines differ in placeholders, types and locking; the servicer, the call-log store and the
migration runner only see :class:`Backend` and :class:`Session`, and pick dialect-specific SQL by
``Backend.dialect``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from paca.db.v1 import db_types_pb2, values_pb2


@dataclass(slots=True)
class ResultSet:
    """Rows of one statement, already in wire form."""

    columns: list[values_pb2.Column] = field(default_factory=list)
    rows: list[values_pb2.Row] = field(default_factory=list)
    rows_affected: int = -1
    truncated: bool = False


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


class Backend(abc.ABC):
    """A named database on one engine, with its connection pool.

    Lifecycle: ``open()`` once, any number of statements, ``aclose()`` (idempotent).
    """

    dialect: ClassVar[str]

    def __init__(self, name: str, url: str, *, pool_size: int, acquire_timeout_s: float) -> None:
        self.name = name
        self.url = url
        self.pool_size = pool_size
        self.acquire_timeout_s = acquire_timeout_s
        self.queries = 0
        self.errors = 0

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    @abc.abstractmethod
    async def execute(
        self, sql: str, params: Sequence[Any], *, read_only: bool, max_rows: int
    ) -> ResultSet:
        """Run one statement; errors are translated to db_service errors."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement for many parameter rows in one transaction; rows affected."""

    @abc.abstractmethod
    def migration_session(self) -> AbstractAsyncContextManager[Session]:
        """A session holding the engine's migration lock, so one runner migrates at a time."""

    @abc.abstractmethod
    def pool_stats(self) -> db_types_pb2.PoolStats: ...
