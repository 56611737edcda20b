"""DbService.Transaction: an interactive transaction over a bidirectional stream.

State machine of one call::

    (start) --begin--> OPEN --statement / savepoint / rollback_to / release--> OPEN
    OPEN --commit | rollback--> (end of stream)
    OPEN --error | client gone | half-close | idle > limit--> rolled back (end of stream)

The transaction holds one pooled connection from ``begin`` to its end; whatever ends it, the
engine's transaction context rolls back what was not committed and gives the connection back
(or drops it when broken), so an abandoned client cannot keep a connection or a lock.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Final

import grpc
from paca.db.v1 import db_service_pb2

from db_service import values
from db_service.backends.base import Backend, TransactionSession
from db_service.databases import Databases
from db_service.limits import required_sql, statement_timeout
from db_service.permissions import Permissions
from db_service.routing import consistency_token
from paca_runtime.errors import InvalidArgument, StatusError

_ISOLATION: Final = {
    db_service_pb2.ISOLATION_LEVEL_UNSPECIFIED: None,
    db_service_pb2.ISOLATION_LEVEL_READ_COMMITTED: "READ COMMITTED",
    db_service_pb2.ISOLATION_LEVEL_REPEATABLE_READ: "REPEATABLE READ",
    db_service_pb2.ISOLATION_LEVEL_SERIALIZABLE: "SERIALIZABLE",
}
# Savepoint names go into the SQL as identifiers, so only plain ones are accepted.
_SAVEPOINT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

Reply = db_service_pb2.TransactionResponse


class TransactionIdle(StatusError):
    """No request came within the idle limit; the transaction was rolled back."""

    code = grpc.StatusCode.ABORTED


def _savepoint(action: db_service_pb2.SavepointAction, field: str) -> str:
    if not _SAVEPOINT.fullmatch(action.name):
        raise InvalidArgument(f"{field}.name", "a letter or _, then letters, digits or _ (<= 63)")
    return action.name


class TransactionHandler:
    """Serves DbService.Transaction calls over the process's databases."""

    def __init__(
        self,
        databases: Databases,
        permissions: Permissions,
        *,
        idle_timeout_s: float,
        max_rows: int,
        max_bytes: int,
    ) -> None:
        self.databases = databases
        self.permissions = permissions
        self.idle_timeout_s = idle_timeout_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"<TransactionHandler idle_timeout_s={self.idle_timeout_s}>"

    async def _next(
        self, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.TransactionRequest | None:
        """The next request; None when the client half-closed. Idle too long: TransactionIdle."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                request = await context.read()
        except TimeoutError:
            raise TransactionIdle(
                f"no request for {self.idle_timeout_s:g} s: transaction rolled back"
            ) from None
        if request is grpc.aio.EOF:
            return None
        assert isinstance(request, db_service_pb2.TransactionRequest)
        return request

    async def serve(self, context: grpc.aio.ServicerContext) -> AsyncIterator[Reply]:
        """Replies of one call, one per request; raises StatusError to end it with a status."""
        first = await self._next(context)
        if first is None:
            return
        if first.WhichOneof("action") != "begin":
            raise InvalidArgument("begin", "the first request must be begin")
        begin = first.begin
        if begin.isolation_level not in _ISOLATION:
            raise InvalidArgument("begin.isolation_level", "unknown level")
        backend = self.databases.get(begin.database)
        must_read_only = self.permissions.check(
            context, "Transaction", backend.name, writes=not begin.read_only
        )
        read_only = begin.read_only or must_read_only
        # The commit of a transaction that may write carries the token of its writes.
        token_of = None if read_only else backend
        async with backend.transaction(
            isolation=_ISOLATION[begin.isolation_level], read_only=read_only
        ) as session:
            yield Reply()
            while True:
                request = await self._next(context)
                if request is None:
                    return  # half-closed without commit: rolled back on the way out
                reply = await self._apply(session, request, context, token_of)
                yield reply
                if session.finished:
                    return

    async def _apply(
        self,
        session: TransactionSession,
        request: db_service_pb2.TransactionRequest,
        context: grpc.aio.ServicerContext,
        token_of: Backend | None,
    ) -> Reply:
        action = request.WhichOneof("action")
        if action == "statement":
            statement = request.statement
            if statement.max_rows < 0:
                raise InvalidArgument("statement.max_rows", "must be >= 0")
            result = await session.execute(
                required_sql(statement.sql, "statement.sql"),
                values.decode_all(statement.params, "statement.params"),
                max_rows=min(statement.max_rows or self.max_rows, self.max_rows),
                max_bytes=self.max_bytes,
                timeout_s=statement_timeout(
                    statement.timeout,
                    statement.HasField("timeout"),
                    context,
                    "statement.timeout",
                ),
            )
            return Reply(
                columns=result.columns,
                rows=result.rows,
                rows_affected=result.rows_affected,
                truncated=result.truncated,
            )
        if action == "savepoint":
            await session.savepoint(_savepoint(request.savepoint, "savepoint"))
        elif action == "rollback_to_savepoint":
            name = _savepoint(request.rollback_to_savepoint, "rollback_to_savepoint")
            await session.rollback_to(name)
        elif action == "release_savepoint":
            await session.release(_savepoint(request.release_savepoint, "release_savepoint"))
        elif action == "commit":
            await session.commit()
            token = "" if token_of is None else await consistency_token(token_of)
            return Reply(committed=True, consistency_token=token)
        elif action == "rollback":
            await session.rollback()
            return Reply(rolled_back=True)
        elif action == "begin":
            raise InvalidArgument("begin", "the transaction is already open")
        else:
            raise InvalidArgument("action", "required")
        return Reply()
