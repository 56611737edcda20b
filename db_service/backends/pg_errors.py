"""PostgreSQL errors: which driver errors mean what, and the db_service error of each.

asyncpg raises the server's errors by SQLSTATE class and its own for a connection that is
gone; a lost connection, a cancelled statement, a duplicate key and a write in a read-only
transaction each map to the error a caller of any engine gets for them.
"""

from __future__ import annotations

import asyncpg

from db_service.errors import (
    BadStatement,
    ConstraintViolation,
    DbError,
    DbUnavailable,
    StatementTimeout,
    UniqueViolation,
    engine_error,
)

UNAVAILABLE = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # The server ending the session (pg_terminate_backend, a shutdown, a crashed sibling, an
    # idle timeout) as an error message read before the socket closes.
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.IdleInTransactionSessionTimeoutError,
    asyncpg.IdleSessionTimeoutError,
)


def translate(exc: Exception) -> DbError:
    """The db_service error of a driver error, with the SQLSTATE attached."""
    error: DbError
    if isinstance(exc, asyncpg.QueryCanceledError):
        error = StatementTimeout(f"postgresql: {exc}")
    elif isinstance(exc, asyncpg.UniqueViolationError):
        error = UniqueViolation(str(exc))
    elif isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        error = ConstraintViolation(str(exc))
    elif isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        error = BadStatement("read_only", "a read-only statement tried to write")
    elif isinstance(exc, asyncpg.DataError):
        error = BadStatement("params", str(exc))
    elif isinstance(exc, UNAVAILABLE):
        error = DbUnavailable(f"postgresql: {exc}", retry_after_s=0.1)
    else:
        error = BadStatement("sql", str(exc))
    return engine_error(error, "postgresql", getattr(exc, "sqlstate", None))


def connection_lost(exc: BaseException) -> bool:
    """The connection broke (terminated by the server, network gone): nothing ran on it.

    An idle connection whose server just ended the session may not show as closed yet: the
    server's last message has arrived, its end has not, and asyncpg refuses the next statement
    with "another operation is in progress" before sending anything.
    """
    if isinstance(exc, asyncpg.InternalClientError):
        return "another operation" in str(exc)
    return isinstance(
        exc, OSError | asyncpg.ConnectionDoesNotExistError | asyncpg.AdminShutdownError
    ) or (isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc))
