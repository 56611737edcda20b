"""Errors of db_service; each carries the gRPC status a client sees.

DbError (StatusError)
├── UnknownDatabase      NOT_FOUND            (paca_runtime.NotFound)
├── BadStatement         INVALID_ARGUMENT     the engine refused the SQL or its parameters
├── ConstraintViolation  FAILED_PRECONDITION  a foreign key / check / not-null constraint
│   └── UniqueViolation  ALREADY_EXISTS       a unique key or primary key already holds the value
├── DbUnavailable        UNAVAILABLE          no connection could be had or it broke
├── StatementTimeout     DEADLINE_EXCEEDED    cancelled on the engine after its time limit
└── MigrationError       FAILED_PRECONDITION  drift or a failed migration; the service stops

An error raised from an engine error carries the engine's own code (SQLSTATE for PostgreSQL,
the error number for MySQL / MariaDB, the extended result code name for SQLite); clients get it
in a ``google.rpc.ErrorInfo`` (reason ``ENGINE_ERROR``, domain = dialect, metadata ``code``), so
they can branch on it without parsing messages. Messages are the engine's text, which never holds
credentials; URLs are redacted before they get into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from paca_runtime.errors import InvalidArgument, NotFound, StatusError, Unavailable

ENGINE_ERROR_REASON = "ENGINE_ERROR"

_E = TypeVar("_E", bound="DbError")


class DbError(StatusError):
    """Root of db_service errors; ``engine`` / ``engine_code`` are set for engine errors."""

    engine: str = ""
    engine_code: str = ""

    def details(self) -> Sequence[Message]:
        found = tuple(super().details())
        if not self.engine_code:
            return found
        info = error_details_pb2.ErrorInfo(
            reason=ENGINE_ERROR_REASON, domain=self.engine, metadata={"code": self.engine_code}
        )
        return (*found, info)


def engine_error(error: _E, engine: str, code: object) -> _E:
    """``error`` with the engine's error code attached (shown to clients as ErrorInfo)."""
    error.engine = engine
    error.engine_code = "" if code is None else str(code)
    return error


class UnknownDatabase(DbError, NotFound):
    def __init__(self, name: str) -> None:
        NotFound.__init__(self, "database", name, field="database")


class BadStatement(DbError, InvalidArgument):
    """The engine refused the statement; the message is the engine's, without parameters."""

    def __init__(self, field: str, description: str) -> None:
        InvalidArgument.__init__(self, field, description)


class ConstraintViolation(DbError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UniqueViolation(ConstraintViolation):
    code = grpc.StatusCode.ALREADY_EXISTS


class DbUnavailable(DbError, Unavailable):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        Unavailable.__init__(self, message, retry_after_s)


class StatementTimeout(DbError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class MigrationError(DbError):
    code = grpc.StatusCode.FAILED_PRECONDITION
