"""Opening a channel to a PACA service with deadlines, safe retries, TLS and a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from paca.client.errors import translate
from paca.client.retries import service_config

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client reaches the services.

    Args:
        timeout_s: Deadline of every call that does not set its own.
        token: Bearer token sent on every call (needs TLS unless the server is on loopback).
        ca_file: CA that signed the server certificate; setting it switches TLS on.
        cert_file / key_file: Client certificate for servers that require mTLS.
        max_attempts: Attempts in all for RPCs the contract marks safe to retry.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    token: str = field(default="", repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    max_attempts: int = 4

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


class _CallDetails:
    """The default deadline and the bearer token, added to a call's details."""

    def __init__(self, options: ClientOptions) -> None:
        self._options = options

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._options.token:
            metadata.add("authorization", f"Bearer {self._options.token}")
        timeout = details.timeout if details.timeout is not None else self._options.timeout_s
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


# One object per kind of RPC: grpc.aio files an interceptor under the first kind it implements
# only, so one object implementing several would leave the others' calls without deadline and
# token.


class _UnaryUnary(_CallDetails, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Deadline and token; typed exceptions."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(self._details(details), request)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None


class _UnaryStream(_CallDetails, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Deadline and token; typed exceptions when a server stream (``CallStream``,
    ``StreamQuery``, ...) fails while it is iterated or read."""

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        # An async iterator in place of the call: gRPC hands it to the caller behind a call
        # object that still answers cancel(), code(), details() and read() (grpc.aio's
        # interceptor contract), so only the exception a caller sees changes.
        call = await continuation(self._details(details), request)
        return _translated(call)


class _StreamUnary(_CallDetails, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """Deadline and token."""

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_CallDetails, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Deadline and token (``Transaction``, ...)."""

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


async def _translated(call: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The messages of a server stream; its failure raised as the typed exception."""
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as error:
        raise translate(error) from None


def connect(address: str, options: ClientOptions | None = None) -> grpc.aio.Channel:
    """A channel to one service; use it with the generated stubs and close it when done.

    ::

        async with connect("127.0.0.1:50051") as channel:
            api = ApiServiceStub(channel)
            reply = await api.Call(CallRequest(url="https://example.com/"))
    """
    options = options or ClientOptions()
    channel_options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(options.max_attempts)),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    interceptors = [
        kind(options) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]
    if options.ca_file is None and options.cert_file is None:
        return grpc.aio.insecure_channel(
            address, options=channel_options, interceptors=interceptors
        )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=options.ca_file.read_bytes() if options.ca_file else None,
        private_key=options.key_file.read_bytes() if options.key_file else None,
        certificate_chain=options.cert_file.read_bytes() if options.cert_file else None,
    )
    return grpc.aio.secure_channel(
        address, credentials, options=channel_options, interceptors=interceptors
    )
