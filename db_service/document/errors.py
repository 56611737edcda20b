"""pymongo's exceptions as db_service errors, translated once at the engine's edge.

    PyMongoError
    ├── ServerSelectionTimeoutError (no server in time)   → DbUnavailable       UNAVAILABLE
    ├── timeout (exc.timeout, ExecutionTimeout, code 50)  → StatementTimeout    DEADLINE_EXCEEDED
    ├── DuplicateKeyError, write error 11000              → UniqueViolation     ALREADY_EXISTS
    ├── ConnectionFailure (AutoReconnect, NotPrimaryError,
    │   ServerSelectionTimeoutError), InvalidOperation    → DbUnavailable       UNAVAILABLE
    ├── OperationFailure 26 / 27 (namespace, index)       → IndexNotFound       NOT_FOUND
    ├── OperationFailure 18, a failed SASL handshake      → NotAuthenticated    FAILED_PRECONDITION
    ├── OperationFailure 13 (unauthorized)                → WriteRefused        FAILED_PRECONDITION
    ├── OperationFailure (any other), WriteError,
    │   InvalidDocument, DocumentTooLarge, BSONError      → BadStatement        INVALID_ARGUMENT
    └── anything else                                     → DbError             INTERNAL

Every message goes through :func:`scrub`: a MongoDB error can quote the URL it was given, and
credentials must never reach a client, a log or a span.
"""

from __future__ import annotations

import re
from typing import Any, Final

import grpc
from bson.errors import BSONError, InvalidDocument
from pymongo import errors as mongo_errors

from db_service.errors import (
    BadStatement,
    DbError,
    DbUnavailable,
    StatementTimeout,
    UniqueViolation,
    engine_error,
)
from paca_runtime.errors import NotFound

ENGINE: Final = "mongodb"
DUPLICATE_KEY: Final = frozenset({11000, 11001, 12582})
TIMEOUT_CODES: Final = frozenset({50, 262})  # MaxTimeMSExpired, ExceededTimeLimit
NOT_FOUND_CODES: Final = frozenset({26, 27})  # NamespaceNotFound, IndexNotFound
UNAUTHORIZED: Final = 13
AUTHENTICATION_FAILED: Final = 18
# Longest reason quoted from a driver message (server selection errors list the whole topology).
_MAX_REASON: Final = 300
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class WriteRefused(DbError):
    """A write to a database configured read_only, or one the server does not allow us."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotAuthenticated(DbError):
    """The server did not accept db_service's credentials: a setup problem, not the caller's."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DocumentTooLarge(DbError):
    """One document is larger than a reply may be."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class IndexNotFound(DbError, NotFound):
    def __init__(self, resource_type: str, name: str, field: str) -> None:
        NotFound.__init__(self, resource_type, name, field=field)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without URL userinfo or any of ``secrets``, cut to a readable length."""
    text = _USERINFO.sub("", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "REDACTED")
    text = text.split(", Topology Description:")[0]
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "..."


def _code(exc: mongo_errors.PyMongoError | BSONError) -> Any:
    return getattr(exc, "code", None)


def translate(
    exc: mongo_errors.PyMongoError | BSONError,
    *,
    database: str,
    field: str,
    secrets: tuple[str, ...] = (),
    resource: tuple[str, str] = ("", ""),
) -> DbError:
    """The db_service error for ``exc`` raised while serving request field ``field``.

    ``resource``: (type, name) of what the operation addressed, for NOT_FOUND.
    """
    code = _code(exc)
    reason = scrub(_message(exc), secrets)
    error: DbError
    if isinstance(exc, BSONError):
        # A value BSON cannot hold (a Python Decimal, a key with a NUL byte): bad input.
        return engine_error(BadStatement(field, reason), ENGINE, None)
    if isinstance(exc, mongo_errors.ServerSelectionTimeoutError):
        # A "timeout" to pymongo, but the caller's answer is: no server.
        error = DbUnavailable(
            f"MongoDB database {database!r} is unavailable: {reason}", retry_after_s=1.0
        )
    elif exc.timeout or isinstance(exc, mongo_errors.ExecutionTimeout) or code in TIMEOUT_CODES:
        error = StatementTimeout(f"MongoDB operation on {database!r} ran out of time: {reason}")
    elif isinstance(exc, mongo_errors.BulkWriteError):
        error, code = _bulk_error(exc, secrets)
    elif isinstance(exc, mongo_errors.DuplicateKeyError) or code in DUPLICATE_KEY:
        error = UniqueViolation(f"duplicate key: {reason}")
    elif isinstance(exc, mongo_errors.ConnectionFailure | mongo_errors.InvalidOperation):
        error = DbUnavailable(
            f"MongoDB database {database!r} is unavailable: {reason}", retry_after_s=1.0
        )
    elif isinstance(exc, mongo_errors.OperationFailure) and code in NOT_FOUND_CODES:
        error = IndexNotFound(resource[0] or "collection", resource[1], field)
    elif isinstance(exc, mongo_errors.OperationFailure) and _authentication(exc):
        error = NotAuthenticated(
            f"db_service could not authenticate to MongoDB database {database!r}: {reason}"
        )
    elif isinstance(exc, mongo_errors.OperationFailure) and code == UNAUTHORIZED:
        error = WriteRefused(f"the MongoDB server refused the operation: {reason}")
    elif isinstance(
        exc,
        mongo_errors.OperationFailure
        | InvalidDocument
        | mongo_errors.DocumentTooLarge
        | mongo_errors.InvalidName,
    ):
        error = BadStatement(field, reason)
    else:
        error = DbError(f"MongoDB error: {reason}")
    return engine_error(error, ENGINE, code)


def _authentication(exc: mongo_errors.OperationFailure) -> bool:
    # A server without the SASL commands answers the handshake with "no such command".
    message = _message(exc).lower()
    return exc.code == AUTHENTICATION_FAILED or "saslstart" in message or "authenticat" in message


def _message(exc: mongo_errors.PyMongoError | BSONError) -> str:
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and isinstance(details.get("errmsg"), str):
        return str(details["errmsg"])
    return str(exc) or type(exc).__name__


def _bulk_error(exc: mongo_errors.BulkWriteError, secrets: tuple[str, ...]) -> tuple[DbError, Any]:
    """The first write error of an insert of many documents, named by its index, and its code."""
    written = exc.details.get("nInserted", 0)
    failures = exc.details.get("writeErrors") or [{}]
    first = failures[0]
    field = f"documents[{first.get('index', 0)}]"
    reason = scrub(str(first.get("errmsg", "write failed")), secrets)
    suffix = f" ({written} inserted before it)" if written else " (nothing inserted)"
    error: DbError
    if first.get("code") in DUPLICATE_KEY:
        error = UniqueViolation(f"{field}: duplicate key: {reason}{suffix}")
    else:
        error = BadStatement(field, f"{reason}{suffix}")
    return error, first.get("code")
