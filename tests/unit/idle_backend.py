"""An engine that only opens and closes: unit tests override the one method they exercise."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from paca.db.v1 import db_types_pb2

from db_service.backends.base import Backend, ResultSet, Session, TransactionSession
from db_service.errors import DbUnavailable


class IdleBackend(Backend):
    """Every statement method refuses with DbUnavailable("not used")."""

    dialect = "postgresql"

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def execute(self, sql: str, params: Sequence[Any], **kwargs: Any) -> ResultSet:
        raise DbUnavailable("not used")

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], **kwargs: Any) -> int:
        raise DbUnavailable("not used")

    async def stream(
        self, sql: str, params: Sequence[Any], **kwargs: Any
    ) -> AsyncGenerator[ResultSet, None]:
        raise DbUnavailable("not used")
        yield ResultSet()

    def transaction(self, **kwargs: Any) -> AbstractAsyncContextManager[TransactionSession]:
        raise DbUnavailable("not used")

    def migration_session(self) -> AbstractAsyncContextManager[Session]:
        raise DbUnavailable("not used")

    def pool_stats(self) -> db_types_pb2.PoolStats:
        return db_types_pb2.PoolStats()
