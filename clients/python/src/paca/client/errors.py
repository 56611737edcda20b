"""Typed exceptions for gRPC statuses, carrying the google.rpc details the services send.

Each is still a ``grpc.aio.AioRpcError`` (code(), details(), trailing_metadata()), so code that
catches the plain gRPC error keeps working; new code catches what it means::

    PacaError (grpc.aio.AioRpcError)
    ├── InvalidArgument      .field_violations: [(field, description), ...]
    ├── NotFound
    ├── AlreadyExists
    ├── FailedPrecondition
    ├── PermissionDenied
    ├── Unauthenticated
    ├── ResourceExhausted    .retry_after_s
    ├── Unavailable          .retry_after_s
    ├── DeadlineExceeded
    └── Internal (and every other code)
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class PacaError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """A failed RPC; subclasses say which status it was."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(
            error.code(),
            error.initial_metadata(),
            error.trailing_metadata(),
            details=error.details(),
            debug_error_string=error.debug_error_string(),
        )
        self.field_violations: list[tuple[str, str]] = []
        self.retry_after_s: float | None = None
        self.reason = ""
        status = rpc_status.from_call(error)
        for detail in status.details if status is not None else ():
            bad_request = error_details_pb2.BadRequest()
            retry_info = error_details_pb2.RetryInfo()
            error_info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad_request):
                self.field_violations += [
                    (v.field, v.description) for v in bad_request.field_violations
                ]
            elif detail.Unpack(retry_info):
                self.retry_after_s = retry_info.retry_delay.ToTimedelta().total_seconds()
            elif detail.Unpack(error_info):
                self.reason = error_info.reason

    def __str__(self) -> str:
        return f"{self.code().name}: {self.details()}"


class InvalidArgument(PacaError, ValueError):
    pass


class NotFound(PacaError, LookupError):
    pass


class AlreadyExists(PacaError):
    pass


class FailedPrecondition(PacaError):
    pass


class PermissionDenied(PacaError, PermissionError):
    pass


class Unauthenticated(PacaError, PermissionError):
    pass


class ResourceExhausted(PacaError):
    pass


class Unavailable(PacaError, ConnectionError):
    pass


class DeadlineExceeded(PacaError, TimeoutError):
    pass


class Internal(PacaError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[PacaError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def translate(error: grpc.aio.AioRpcError) -> PacaError:
    """The typed exception for a failed RPC."""
    if isinstance(error, PacaError):
        return error
    return _BY_CODE.get(error.code(), Internal)(error)
