"""gRPC server bootstrap shared by every service: health, reflection, tracing, graceful stop.

Lifecycle of a :class:`GrpcServer`: ``start()`` binds and marks every service SERVING;
``stop()`` marks them NOT_SERVING (load balancers and probes drain first), stops accepting and
lets in-flight calls finish within the grace period, then cancels what is left.

Services reach the server as generic handlers only (:class:`GenericOnly`). A generated
``add_*_to_server`` gives the server each method twice: in a generic handler (a dict by method
name) and as a registered method. grpc.aio's serving loop keeps one pending request per
registered method and, for every call that arrives, waits again on all of them
(``asyncio.wait`` over every pending future): a cost per call that grows with the number of
methods, dozens in db_service. Given only the generic handlers, the server serves the same
methods from those dicts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from paca_runtime.auth import TokenAuthInterceptor
from paca_runtime.rpc_spans import ServerSpans, TracedHandlers
from paca_runtime.security import SecuritySettings

logger = logging.getLogger(__name__)

# Every server accepts large messages (bodies, result sets) up to this size.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class GenericOnly:
    """The server as a generated ``add_*_to_server`` sees it: generic handlers are added, the
    registered-method table is left out (the generic handler serves those methods). With
    ``spans``, each handler found runs under its server span (``TracedHandlers``)."""

    def __init__(self, server: grpc.aio.Server, spans: ServerSpans | None = None) -> None:
        self._server = server
        self._spans = spans

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        spans = self._spans
        if spans is not None:
            handlers = [TracedHandlers(handler, spans) for handler in handlers]
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Left out: the generic handler added just before serves these methods."""


class GrpcServer:
    """One grpc.aio server with the standard health and reflection services.

    Args:
        name: Service name for logs, e.g. "api_service".
        address: ``host:port`` to bind; port 0 picks a free port (see ``port``).
        reuse_port: Bind with SO_REUSEPORT so several processes share one port. Off by default,
            so a second server on a taken port fails instead of silently splitting traffic.
        interceptors: Extra server interceptors, after the tracing and auth ones.
        security: TLS / mTLS and bearer-token auth; None serves plaintext without auth.
    """

    def __init__(
        self,
        name: str,
        address: str,
        *,
        reuse_port: bool = False,
        interceptors: Sequence[Any] = (),
        security: SecuritySettings | None = None,
    ) -> None:
        self.name = name
        self.security = security or SecuritySettings()
        chain: list[Any] = []
        if self.security.tokens is not None:
            chain.append(TokenAuthInterceptor(self.security.tokens))
        chain.extend(interceptors)
        # The server span must cover every interceptor; with none, it wraps the handlers as
        # the server finds them, without grpc.aio's interceptor machinery per call.
        spans = ServerSpans()
        self._spans: ServerSpans | None = None
        if chain:
            chain.insert(0, spans)
        else:
            self._spans = spans
        self.address = address
        self.port = 0
        self._service_names: list[str] = []
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=chain or None,
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, GenericOnly(self.server))

    def __repr__(self) -> str:
        return f"<GrpcServer {self.name} address={self.address} port={self.port}>"

    @property
    def bound_address(self) -> str:
        """The address clients dial, with the real port after binding port 0."""
        host = self.address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def add_service(self, full_name: str, register: Callable[[grpc.aio.Server], None]) -> None:
        """Add a servicer; ``full_name`` (e.g. "paca.api.v1.ApiService") is used for health."""
        register(GenericOnly(self.server, self._spans))
        self._service_names.append(full_name)

    async def start(self) -> None:
        """Bind, start and report SERVING for the server and each added service."""
        names = [
            *self._service_names,
            reflection.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        # What reflection.enable_server_reflection does for an aio server, generic only.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(names), GenericOnly(self.server)
        )
        credentials = self.security.tls.server_credentials()
        if credentials is None:
            self.port = self.server.add_insecure_port(self.address)
        else:
            self.port = self.server.add_secure_port(self.address, credentials)
        if self.port == 0:
            raise OSError(f"{self.name}: cannot bind {self.address}")
        await self.server.start()
        for service in ["", *self._service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "%s serving gRPC on %s (%s, %s)",
            self.name,
            self.bound_address,
            "mTLS" if self.security.tls.client_ca_file else "TLS" if credentials else "plaintext",
            "token auth" if self.security.tokens is not None else "no auth",
        )

    async def stop(self, grace_s: float, drain_s: float = 0.0) -> None:
        """Drain: NOT_SERVING, keep serving ``drain_s`` while clients that health-check move
        away, then stop accepting and wait up to ``grace_s`` for in-flight calls.

        The drain window matters because gRPC cancels calls that reach a stopping server before
        a handler picks them up (grpc/grpc#41785) instead of refusing them as UNAVAILABLE.
        """
        await self.health.enter_graceful_shutdown()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await self.server.stop(grace_s)
        logger.info("%s stopped gRPC on %s", self.name, self.bound_address)
