"""Per-request limits shared by every RPC: the statement time limit and required SQL.

Python gRPC does not pass the caller's deadline on by itself: each statement gets the smaller of
the request's ``timeout`` and the time the caller has left, as the engine's statement timeout, so
the engine stops work nobody waits for and the pooled connection survives.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from google.protobuf import duration_pb2

from paca_runtime.errors import InvalidArgument

# The engine gets slightly less than the caller's remaining time, so its own timeout (with the
# engine's error code) wins the race against the client's deadline.
DEADLINE_MARGIN_S: Final = 0.02


def statement_timeout(
    timeout: duration_pb2.Duration,
    has_timeout: bool,
    context: grpc.aio.ServicerContext,
    field: str = "timeout",
) -> float | None:
    """The statement time limit in seconds: the request's, capped by the caller's deadline."""
    requested = None
    if has_timeout:
        requested = timeout.ToTimedelta().total_seconds()
        if requested <= 0:
            raise InvalidArgument(field, "must be > 0")
    return _capped(requested, context)


def request_timeout(request: Any, context: grpc.aio.ServicerContext) -> float | None:
    """:func:`statement_timeout` of a request's optional ``timeout`` field.

    The field is read only when set: reading an unset message field builds an empty one, a
    measurable share of a small Query.
    """
    if request.HasField("timeout"):
        return statement_timeout(request.timeout, True, context)
    return _capped(None, context)


def _capped(requested: float | None, context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return requested
    remaining = max(0.001, remaining - min(DEADLINE_MARGIN_S, remaining / 10))
    return remaining if requested is None or remaining < requested else requested


def required_sql(sql: str, field: str = "sql") -> str:
    # isspace() is what strip() strips, without copying the statement.
    if not sql or sql.isspace():
        raise InvalidArgument(field, "required")
    return sql
