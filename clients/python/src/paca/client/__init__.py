"""A typed async client for the PACA services.

``connect()`` opens a channel with a default deadline on every call, gRPC retries of UNAVAILABLE
for exactly the RPCs the contract marks safe, TLS / mTLS and a bearer token; failures raise the
typed exceptions of :mod:`paca.client.errors`. The generated stubs (``paca.api.v1`` ...) are used
on that channel as they are, so every RPC stays fully typed.
"""

from paca.client.channel import ClientOptions, connect
from paca.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PacaError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    translate,
)
from paca.client.retries import retryable_methods, service_config

__all__ = [
    "AlreadyExists",
    "ClientOptions",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PacaError",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "connect",
    "retryable_methods",
    "service_config",
    "translate",
]
