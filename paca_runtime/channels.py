"""Channels from one service to another, secured as the settings say."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from paca_runtime.auth import bearer_token_interceptors
from paca_runtime.security import SecuritySettings
from paca_runtime.server import MAX_MESSAGE_BYTES
from paca_runtime.settings import TARGET_SCHEMES


def open_channel(
    address: str, security: SecuritySettings, interceptors: Sequence[Any] = ()
) -> grpc.aio.Channel:
    """A channel to ``address``: TLS when a CA or client certificate is set, the service token
    on every call when one is set, plaintext otherwise (the loopback default). A target URI of
    several addresses (``ipv4:a:1,b:2``, ``dns:///name:port``) is balanced round-robin."""
    chain = list(interceptors)
    if security.service_token:
        chain.extend(bearer_token_interceptors(security.service_token))
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if address.startswith(TARGET_SCHEMES):
        # Several replicas behind one target: spread calls over all of them, not just the first.
        options.append(("grpc.lb_policy_name", "round_robin"))
    credentials = security.tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=chain)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=chain)
