"""gRPC errors with google.rpc details, raised by engines and turned into statuses in one place.

Each service's root exception subclasses :class:`StatusError`, so an engine raises plain Python
exceptions and its servicer needs only :func:`translate_errors` to answer with the right status
code and typed details (``BadRequest`` naming the field, ``RetryInfo``, ``ResourceInfo``)::

    StatusError
    ├── InvalidArgument   INVALID_ARGUMENT + BadRequest.field_violations
    ├── NotFound          NOT_FOUND + ResourceInfo
    ├── Unavailable       UNAVAILABLE (+ RetryInfo when a retry delay is known)
    └── ...               services add their own subclasses with their own codes
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

logger = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class StatusError(Exception):
    """An error a client sees as a gRPC status; subclasses set ``code`` and may add details."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def details(self) -> Sequence[Message]:
        """google.rpc detail messages sent with the status."""
        return ()

    def to_status(self) -> status_pb2.Status:
        packed = []
        for detail in self.details():
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return status_pb2.Status(code=self.code.value[0], message=str(self), details=packed)


class InvalidArgument(StatusError, ValueError):
    """Bad input; names the offending field (dotted path, e.g. ``endpoint.base_url``)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def details(self) -> Sequence[Message]:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=self.field, description=self.description
        )
        return (error_details_pb2.BadRequest(field_violations=[violation]),)


class NotFound(StatusError, LookupError):
    """A named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str, field: str = "") -> None:
        super().__init__(f"{resource_type} {name!r} not found" + (f" ({field})" if field else ""))
        self.resource_type = resource_type
        self.name = name
        self.field = field

    def details(self) -> Sequence[Message]:
        return (
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=self.name, description=self.field
            ),
        )


class Unavailable(StatusError, ConnectionError):
    """A dependency cannot serve the request now; safe to retry later."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> Sequence[Message]:
        if self.retry_after_s is None:
            return ()
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(self.retry_after_s * 1000))
        return (error_details_pb2.RetryInfo(retry_delay=delay),)


def status_of(exc: BaseException) -> status_pb2.Status:
    """The status a client should see for ``exc``; unknown exceptions become INTERNAL."""
    if isinstance(exc, StatusError):
        return exc.to_status()
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


def translate_errors(
    method: Callable[[Any, _Req, grpc.aio.ServicerContext], Awaitable[_Resp]],
) -> Callable[[Any, _Req, grpc.aio.ServicerContext], Awaitable[_Resp]]:
    """Decorate a unary servicer method so raised StatusErrors abort with status and details."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: _Req, context: grpc.aio.ServicerContext) -> _Resp:
        try:
            return await method(self, request, context)
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in %s", method.__qualname__)
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return wrapper
