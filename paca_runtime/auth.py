"""Bearer-token authentication and per-RPC scopes for every server of the stack.

The access policy is one table, :data:`METHOD_SCOPES`: each service names the scope an RPC needs,
with a default for RPCs not listed that is the service's broadest scope, so a newly added RPC is
closed until someone decides who may call it. Health checks and reflection stay open (probes).
A servicer can demand more for a particular request with :func:`require_scope` (a Query that
writes needs db.write, not db.read).

Callers learn only what they may know: a missing or unknown token is UNAUTHENTICATED without
saying which; a valid token without the scope is PERMISSION_DENIED naming the scope it lacks.
Tokens are compared by SHA-256 digest in constant time and never logged.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from paca_runtime.errors import StatusError
from paca_runtime.security import TokenTable, grants, token_digest

logger = logging.getLogger(__name__)

# service prefix -> (scope of RPCs not listed, {rpc: scope})
METHOD_SCOPES: dict[str, tuple[str, dict[str, str]]] = {
    "/paca.api.v1.ApiService/": (
        "api.admin",
        {
            rpc: "api.call"
            for rpc in (
                "Call",
                "CallStream",
                "GraphQL",
                "FanOut",
                "GetEndpoint",
                "ListEndpoints",
                "GetStats",
                "Subscribe",
                "AckEvent",
            )
        },
    ),
    "/paca.db.v1.DbService/": (
        "db.admin",
        {
            **{
                rpc: "db.read"
                for rpc in ("Query", "StreamQuery", "Select", "GetStats", "GetMigrationStatus")
            },
            **{
                rpc: "db.write"
                for rpc in (
                    "Execute",
                    "ExecuteBatch",
                    "Transaction",
                    "Insert",
                    "Update",
                    "Delete",
                    "RecordApiCalls",
                )
            },
        },
    ),
    # Replaying a group's history re-sends events to every consumer: an admin's decision.
    "/paca.api.v1.WebhookService/": (
        "api.admin",
        {rpc: "api.call" for rpc in ("Subscribe", "AckEvent", "ListDeadEvents", "GetWebhookStats")},
    ),
    "/paca.db.v1.DocumentService/": (
        "db.admin",
        {
            **{
                rpc: "db.read"
                for rpc in (
                    "FindDocuments",
                    "FindOneDocument",
                    "AggregateDocuments",
                    "CountDocuments",
                    "ListIndexes",
                    "GetDocumentStats",
                )
            },
            **{
                rpc: "db.write"
                for rpc in (
                    "InsertDocuments",
                    "UpdateDocuments",
                    "DeleteDocuments",
                    "CreateIndex",
                    "DropIndex",
                )
            },
        },
    ),
    # Only api_service calls it; every RPC changes delivery state or reads what it serves.
    "/paca.db.v1.EventStoreService/": ("db.write", {}),
    # Command and Pipeline ask for db.write themselves when a command writes (require_scope).
    "/paca.db.v1.KeyValueService/": (
        "db.admin",
        {
            **{rpc: "db.read" for rpc in ("Command", "Pipeline", "Subscribe", "GetKeyValueStats")},
            "Publish": "db.write",
        },
    ),
    "/paca.monitor.v1.MonitorService/": (
        "monitor.admin",
        {"GetStatus": "monitor.read", "WatchAlerts": "monitor.read", "Report": "monitor.report"},
    ),
}

_scopes: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "paca_scopes", default=None
)


class PermissionDenied(StatusError, PermissionError):
    code = grpc.StatusCode.PERMISSION_DENIED


def scope_for(method: str) -> str | None:
    """The scope an RPC needs; None for RPCs outside the stack's services (health, reflection)."""
    for prefix, (default, scopes) in METHOD_SCOPES.items():
        if method.startswith(prefix):
            return scopes.get(method[len(prefix) :], default)
    return None


def require_scope(scope: str) -> None:
    """Raise PermissionDenied unless the current caller holds ``scope`` (no-op when auth is off)."""
    held = _scopes.get()
    if held is not None and not grants(held, scope):
        raise PermissionDenied(f"the token lacks scope {scope}")


def _bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return ""


def _rewrap(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, build in kinds:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return build(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _denial(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same cardinality as ``handler`` that refuses every call.

    The kind decides, not the shape of the servicer's function: gRPC (and the tracing
    interceptor wrapping what this returns) iterate a response-streaming handler, so it must
    be an async generator, and await the others. Requests are never read.
    """

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises

    build: Callable[..., grpc.RpcMethodHandler]
    behavior: Callable[..., Any]
    if handler.request_streaming and handler.response_streaming:
        build, behavior = grpc.stream_stream_rpc_method_handler, refuse_stream
    elif handler.response_streaming:
        build, behavior = grpc.unary_stream_rpc_method_handler, refuse_stream
    elif handler.request_streaming:
        build, behavior = grpc.stream_unary_rpc_method_handler, refuse
    else:
        build, behavior = grpc.unary_unary_rpc_method_handler, refuse
    return build(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _with_scopes(scopes: frozenset[str]) -> Callable[[Callable[..., Any]], Any]:
    # Each RPC runs in its own task, so setting the variable inside the behaviour scopes it to
    # exactly that call.
    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def generator(request: Any, context: Any) -> Any:
                _scopes.set(scopes)
                async for item in behavior(request, context):
                    yield item

            return generator

        async def coroutine(request: Any, context: Any) -> Any:
            _scopes.set(scopes)
            return await behavior(request, context)

        return coroutine

    return wrap


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Admits an RPC when its bearer token holds the RPC's scope."""

    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        needed = scope_for(details.method)
        if handler is None or needed is None:
            return handler
        entry = self.tokens.lookup(_bearer(details.invocation_metadata))
        if entry is None:
            return _denial(
                handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token"
            )
        if not grants(entry.scopes, needed):
            logger.info("denied %s to token %s: lacks %s", details.method, entry.name, needed)
            return _denial(
                handler, grpc.StatusCode.PERMISSION_DENIED, f"the token lacks scope {needed}"
            )
        return _rewrap(handler, _with_scopes(entry.scopes))


class _BearerToken:
    """The ``authorization: Bearer <token>`` header, added to a call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} token=REDACTED>"

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnaryBearer(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStreamBearer(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnaryBearer(_BearerToken, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStreamBearer(_BearerToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that add ``authorization: Bearer <token>`` to every call of a channel
    (TLS or loopback), of all four kinds.

    One per kind: a grpc.aio channel files each interceptor under the first call kind it
    subclasses and under no other, so one class of all four kinds would reach unary calls only.
    """
    return [
        kind(token)
        for kind in (_UnaryUnaryBearer, _UnaryStreamBearer, _StreamUnaryBearer, _StreamStreamBearer)
    ]


def main() -> None:
    """``python -m paca_runtime.auth hash TOKEN``: the digest to put in the tokens file."""
    if len(sys.argv) != 3 or sys.argv[1] != "hash":
        sys.exit("usage: python -m paca_runtime.auth hash TOKEN")
    print(token_digest(sys.argv[2]).hex())


if __name__ == "__main__":
    main()
