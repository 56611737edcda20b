"""Redis failures as db_service errors, translated once at the edge of the engine.

Beyond :mod:`db_service.errors`, the key-value engine raises::

    DbError
    ├── DataConflict        FAILED_PRECONDITION  the data does not allow the command (WRONGTYPE,
    │                                            a counter that is not an integer)
    ├── ReadOnlyKeyValue    FAILED_PRECONDITION  a write to a database configured read-only
    ├── TransactionAborted  ABORTED              a WATCHed key changed before EXEC
    ├── ReplyTooLarge       RESOURCE_EXHAUSTED   one value larger than max_bytes
    └── TooManySubscriptions RESOURCE_EXHAUSTED  PACA_REDIS_MAX_SUBSCRIPTIONS streams are open

redis-py's messages name hosts and ports but never the password; :func:`translate` still removes
the configured passwords from any message, as a URL could reach one through a library change.
Each error carries Redis's error code (``WRONGTYPE``, ``ERR``, ...) as ``engine_code``.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from redis import exceptions as redis_errors

from db_service.errors import DbError, DbUnavailable, StatementTimeout, engine_error
from paca_runtime.redact import REDACTED

ENGINE = "redis"


class DataConflict(DbError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ReadOnlyKeyValue(DbError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class TransactionAborted(DbError):
    code = grpc.StatusCode.ABORTED


class ReplyTooLarge(DbError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, size: int, max_bytes: int) -> None:
        super().__init__(f"a value of {size} bytes exceeds max_bytes ({max_bytes})")
        self.engine, self.engine_code = ENGINE, "REPLY_TOO_LARGE"


class TooManySubscriptions(DbError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def error_code(exc: redis_errors.ResponseError) -> str:
    """Redis's error code: the first word of the reply ("WRONGTYPE", "ERR", "NOPERM")."""
    word = str(exc).split(" ", 1)[0]
    return word if word.isupper() else "ERR"


def _clean(message: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    return message


def translate(
    exc: BaseException, database: str, secrets: Iterable[str | None] = ()
) -> BaseException:
    """The db_service error for a redis-py (or timeout) exception; others come back unchanged."""
    if isinstance(exc, DbError):
        return exc
    text = _clean(str(exc), secrets)
    if isinstance(exc, redis_errors.WatchError):
        return engine_error(
            TransactionAborted("a watched key changed; the transaction did not run"),
            ENGINE,
            "WATCH",
        )
    if isinstance(exc, (TimeoutError, redis_errors.TimeoutError)):
        return engine_error(
            StatementTimeout(f"redis database {database!r}: the command ran out of time"),
            ENGINE,
            "TIMEOUT",
        )
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        # A server-side configuration fault: the caller can do nothing but wait for a fix.
        return engine_error(
            DbUnavailable(f"redis database {database!r}: authentication failed"), ENGINE, "AUTH"
        )
    if isinstance(
        exc,
        redis_errors.ConnectionError
        | redis_errors.BusyLoadingError
        | redis_errors.ClusterDownError
        | redis_errors.TryAgainError
        | redis_errors.MasterDownError
        | redis_errors.ReadOnlyError
        | OSError,
    ):
        return engine_error(
            DbUnavailable(f"redis database {database!r} is unavailable: {text}"),
            ENGINE,
            type(exc).__name__,
        )
    if isinstance(exc, redis_errors.ResponseError):
        return engine_error(DataConflict(text), ENGINE, error_code(exc))
    if isinstance(exc, redis_errors.RedisError):
        return engine_error(
            DbUnavailable(f"redis database {database!r}: {text}"), ENGINE, type(exc).__name__
        )
    return exc
