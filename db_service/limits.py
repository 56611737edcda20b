"""Per-request limits shared by every RPC: the statement time limit and required SQL.

Python gRPC does not pass the caller's deadline on by itself: each statement gets the smaller of
the request's ``timeout`` and the time the caller has left, as the engine's statement timeout, so
the engine stops work nobody waits for and the pooled connection survives.
"""

from __future__ import annotations

from typing import Final

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
    limits = []
    if has_timeout:
        requested = timeout.ToTimedelta().total_seconds()
        if requested <= 0:
            raise InvalidArgument(field, "must be > 0")
        limits.append(requested)
    remaining = context.time_remaining()
    if remaining is not None:
        limits.append(max(0.001, remaining - min(DEADLINE_MARGIN_S, remaining / 10)))
    return min(limits) if limits else None


def required_sql(sql: str, field: str = "sql") -> str:
    if not sql.strip():
        raise InvalidArgument(field, "required")
    return sql
