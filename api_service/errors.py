"""Errors of api_service; each carries the gRPC status a client sees.

    ApiError (StatusError)
    ├── UnknownEndpoint       NOT_FOUND          (paca_runtime.NotFound)
    ├── InvalidCall           INVALID_ARGUMENT   names the field (paca_runtime.InvalidArgument)
    └── UpstreamError         no usable upstream response
        ├── UpstreamTimeout       DEADLINE_EXCEEDED  (also a TimeoutError)
        └── UpstreamUnavailable   UNAVAILABLE        connection refused, reset, DNS, TLS

An upstream HTTP response of any status is not an error: the caller gets the status.
"""

from __future__ import annotations

import grpc

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


class UpstreamTimeout(UpstreamError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamUnavailable(UpstreamError, Unavailable):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        Unavailable.__init__(self, message, retry_after_s)
