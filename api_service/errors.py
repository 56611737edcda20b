"""Errors of api_service; each carries the gRPC status a client sees.

    ApiError (StatusError)
    ├── UnknownEndpoint       NOT_FOUND          (paca_runtime.NotFound)
    ├── InvalidCall           INVALID_ARGUMENT   names the field (paca_runtime.InvalidArgument)
    ├── RateLimited           RESOURCE_EXHAUSTED + RetryInfo   over a rate or concurrency limit
    └── UpstreamError         no usable upstream response
        ├── ForbiddenTarget       PERMISSION_DENIED + ErrorInfo   the address is in a network
        │                             api_service may not call (not retried)
        ├── ResponseTooLarge      RESOURCE_EXHAUSTED  the body passed the size limit (not retried)
        ├── UpstreamTimeout       DEADLINE_EXCEEDED  (also a TimeoutError)
        └── UpstreamUnavailable   UNAVAILABLE        connection refused, reset, DNS, TLS
            └── CircuitOpen           + RetryInfo    the breaker of the endpoint or host is open

An upstream HTTP response of any status is not an error: the caller gets the status.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from paca_runtime.errors import InvalidArgument, NotFound, StatusError, Unavailable


class ApiError(StatusError):
    """Root of api_service errors."""


class UnknownEndpoint(ApiError, NotFound):
    def __init__(self, name: str, field: str = "endpoint") -> None:
        NotFound.__init__(self, "endpoint", name, field=field)


class InvalidCall(ApiError, InvalidArgument):
    def __init__(self, field: str, description: str) -> None:
        InvalidArgument.__init__(self, field, description)


class UpstreamError(ApiError):
    """No usable response came from the upstream."""

    # Worth another attempt, and a sign of an unhealthy upstream for the breakers.
    retryable = True


class ForbiddenTarget(UpstreamError):
    """The target address is outside the networks api_service may call.

    PERMISSION_DENIED rather than INVALID_ARGUMENT: the URL is well formed, and whether it is
    refused depends on this deployment's policy and on what its name resolves to right now.
    """

    code = grpc.StatusCode.PERMISSION_DENIED
    retryable = False

    def __init__(self, host: str) -> None:
        super().__init__(f"url: {host} is in a network api_service may not call")
        self.host = host

    def details(self) -> Sequence[Message]:
        return (
            error_details_pb2.ErrorInfo(
                reason="FORBIDDEN_NETWORK", domain="api.paca", metadata={"field": "url"}
            ),
        )


class ResponseTooLarge(UpstreamError):
    """The upstream's body is larger than api_service returns (gRPC's own code for size)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = False

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upstream response is larger than {max_bytes} bytes")


class UpstreamTimeout(UpstreamError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamUnavailable(UpstreamError, Unavailable):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        Unavailable.__init__(self, message, retry_after_s)


class CircuitOpen(UpstreamUnavailable):
    """A breaker refused the call; ``retry_after_s`` is the time until it admits probes."""

    def __init__(self, breaker: str, retry_after_s: float) -> None:
        super().__init__(f"circuit {breaker} is open", retry_after_s)
        self.breaker = breaker


class RateLimited(ApiError):
    """Over a rate or concurrency limit; ``retry_after_s`` is when a call would be admitted."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> Sequence[Message]:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(self.retry_after_s * 1000)))
        return (error_details_pb2.RetryInfo(retry_delay=delay),)
