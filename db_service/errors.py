"""Errors of db_service; each carries the gRPC status a client sees.

DbError (StatusError)
├── UnknownDatabase      NOT_FOUND            (paca_runtime.NotFound)
├── BadStatement         INVALID_ARGUMENT     the engine refused the SQL or its parameters
├── ConstraintViolation  FAILED_PRECONDITION  a unique / foreign key / check constraint
├── DbUnavailable        UNAVAILABLE          no connection could be had or it broke
├── StatementTimeout     DEADLINE_EXCEEDED    cancelled on the engine after its time limit
└── MigrationError       FAILED_PRECONDITION  drift or a failed migration; the service stops
"""

from __future__ import annotations

import grpc

from paca_runtime.errors import InvalidArgument, NotFound, StatusError, Unavailable


class DbError(StatusError):
    """Root of db_service errors."""


class UnknownDatabase(DbError, NotFound):
    def __init__(self, name: str) -> None:
        NotFound.__init__(self, "database", name, field="database")


class BadStatement(DbError, InvalidArgument):
    """The engine refused the statement; the message is the engine's, without parameters."""

    def __init__(self, field: str, description: str) -> None:
        InvalidArgument.__init__(self, field, description)


class ConstraintViolation(DbError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DbUnavailable(DbError, Unavailable):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        Unavailable.__init__(self, message, retry_after_s)


class StatementTimeout(DbError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class MigrationError(DbError):
    code = grpc.StatusCode.FAILED_PRECONDITION
