"""In-process use of the call engine: ``UniversalAPIClient`` and friends, no gRPC in between.

These are the names of the seed's README (``UniversalAPIClient``, ``RESTClient``,
``GraphQLClient``; ``APIEndpoint``, ``HTTPMethod`` and ``APIResponse`` are in ``facade_types``)
over the very classes the gRPC servicer delegates to: a client owns one ``OutboundCaller``
with its transport, guards, cache and call recorder, built from the same ``ApiSettings`` (so
``PACA_API_ALLOWED_NETWORKS``, ``PACA_API_CACHE_MAX_BYTES``, the retry defaults and the rest
apply alike), and each request is the same ``CallRequest`` a gRPC client would send.

Call records go to db_service when ``PACA_DB_ADDRESS`` is set (or ``settings.db_address`` is
given); otherwise the most recent ones are kept in memory (``client.records``), since a
library should not write a spool nobody drains.

Lifecycle: ``await initialize()`` once, any number of calls, ``await cleanup()`` (idempotent);
or ``async with``. Upstream failures come back as results (``is_success`` false, ``error``
set); bad input (an unknown endpoint, a malformed URL) raises ``ApiError`` like the RPC does.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import grpc
from paca.api.v1 import api_service_pb2, api_types_pb2
from paca.db.v1 import db_types_pb2

from api_service.caller import OutboundCaller
from api_service.calllog import CallRecorder, DbServiceSink
from api_service.errors import ApiError, InvalidCall, UnknownEndpoint
from api_service.facade_types import APIEndpoint, APIResponse, HTTPMethod, decode_body
from api_service.graphql import GraphQLCaller
from api_service.registry import APIRegistry
from api_service.settings import DB_ADDRESS, ApiSettings
from paca_runtime import RuntimeSettings, SettingsSource
from paca_runtime.channels import open_channel

# Records kept in memory when there is no db_service.
MEMORY_RECORDS = 1000


class _MemorySink:
    """Keeps the most recent call records when there is no db_service to send them to."""

    def __init__(self, records: deque[db_types_pb2.ApiCallRecord]) -> None:
        self.records = records

    async def __call__(self, records: Sequence[db_types_pb2.ApiCallRecord]) -> None:
        self.records.extend(records)


def default_settings() -> ApiSettings:
    """``ApiSettings`` from the environment, without db_service unless PACA_DB_ADDRESS says."""
    source = SettingsSource()
    settings = ApiSettings.from_source(source, RuntimeSettings.from_source(source))
    if source.raw(DB_ADDRESS) is None:
        settings = dataclasses.replace(settings, db_address="")
    return settings


class UniversalAPIClient:
    """Calls REST and GraphQL APIs under ``base_url`` through the call engine.

    Args:
        base_url: Joined to relative paths and endpoint URLs; may be empty.
        settings: Engine settings (default: from the environment, see ``default_settings``).
        provider: Provider name in the call log (default: the base URL's host).
        runtime: TLS and token settings of the channel to db_service (default: from the
            environment).
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        settings: ApiSettings | None = None,
        provider: str = "",
        runtime: RuntimeSettings | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings or default_settings()
        self.runtime = runtime
        self.provider = provider or urlsplit(base_url).hostname or ""
        self.registry = APIRegistry()
        self.records: deque[db_types_pb2.ApiCallRecord] = deque(maxlen=MEMORY_RECORDS)
        self._channel: grpc.aio.Channel | None = None
        self._caller: OutboundCaller | None = None

    def __repr__(self) -> str:
        state = "open" if self._caller is not None else "closed"
        return (
            f"<{type(self).__name__} {self.base_url or '-'} {state} endpoints={len(self.registry)}>"
        )

    @property
    def caller(self) -> OutboundCaller:
        """The engine (after ``initialize()``)."""
        if self._caller is None:
            raise RuntimeError(f"{type(self).__name__}.initialize() has not been awaited")
        return self._caller

    async def initialize(self) -> None:
        """Open the connection pool and start the call log (idempotent)."""
        if self._caller is not None:
            return
        settings = self.settings
        if settings.db_address:
            runtime = self.runtime or RuntimeSettings.from_source(SettingsSource())
            self._channel = open_channel(settings.db_address, runtime.security)
            sink: Any = DbServiceSink(self._channel)
        else:
            sink = _MemorySink(self.records)
        recorder = CallRecorder(settings.calllog, sink)
        caller = OutboundCaller.from_settings(settings, self.registry, recorder)
        await caller.transport.open()
        await caller.guards.open()
        await recorder.start()
        self._caller = caller

    async def cleanup(self) -> None:
        """Send (or keep) the call records, close the pool (idempotent)."""
        caller, self._caller = self._caller, None
        if caller is not None:
            await caller.recorder.aclose()
            await caller.transport.aclose()
            await caller.guards.aclose()
            if caller.cache is not None:
                await caller.cache.aclose()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.cleanup()

    def register_endpoint(self, endpoint: APIEndpoint) -> None:
        """Register (or replace) an endpoint; raises InvalidCall naming a bad field."""
        proto = endpoint.to_proto(self.base_url)
        if not proto.provider:
            proto.provider = self.provider or "local"
        self.registry.register(proto)

    async def request(
        self,
        method: HTTPMethod | str,
        name_or_path: str,
        *,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        path_params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        idempotency_key: str = "",
    ) -> APIResponse:
        """One request to a registered endpoint (by name) or a path/URL.

        ``timeout_s`` is the whole call's deadline, retries included.
        """
        request = api_service_pb2.CallRequest(
            method=HTTPMethod(str(method).upper()).proto,
            path_params=dict(path_params or {}),
            headers=[api_types_pb2.Header(name=k, value=v) for k, v in (headers or {}).items()],
            idempotency_key=idempotency_key,
        )
        pairs = params.items() if isinstance(params, Mapping) else params or ()
        request.query.extend(api_types_pb2.QueryParam(name=k, value=v) for k, v in pairs)
        if self._registered(name_or_path):
            request.endpoint = name_or_path
        else:
            request.url = self._url(name_or_path)
            request.provider = self.provider
        if json_body is not None:
            request.json_body = json.dumps(json_body)
        elif data is not None:
            request.raw_body = data
        try:
            reply = await self.caller.call(request, time_remaining_s=timeout_s)
        except (InvalidCall, UnknownEndpoint):
            raise
        except ApiError as exc:
            return APIResponse.failed(exc)
        error = reply.validation_error or None
        if error is None and not 200 <= reply.status_code < 400:
            error = f"HTTP {reply.status_code}"
        return APIResponse(
            status_code=reply.status_code,
            data=decode_body(reply.body, reply.headers),
            headers=[(h.name, h.value) for h in reply.headers],
            error=error,
            is_validation_error=bool(reply.validation_error),
            attempts=reply.attempts,
            from_cache=reply.from_cache,
            latency_ms=reply.latency.ToMicroseconds() / 1000,
        )

    def _registered(self, name: str) -> bool:
        try:
            self.registry.get(name)
        except UnknownEndpoint:
            return False
        return True

    def _url(self, path: str) -> str:
        if urlsplit(path).scheme:
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def get(self, name_or_path: str, **kwargs: Any) -> APIResponse:
        return await self.request(HTTPMethod.GET, name_or_path, **kwargs)

    async def post(self, name_or_path: str, **kwargs: Any) -> APIResponse:
        return await self.request(HTTPMethod.POST, name_or_path, **kwargs)

    async def put(self, name_or_path: str, **kwargs: Any) -> APIResponse:
        return await self.request(HTTPMethod.PUT, name_or_path, **kwargs)

    async def patch(self, name_or_path: str, **kwargs: Any) -> APIResponse:
        return await self.request(HTTPMethod.PATCH, name_or_path, **kwargs)

    async def delete(self, name_or_path: str, **kwargs: Any) -> APIResponse:
        return await self.request(HTTPMethod.DELETE, name_or_path, **kwargs)


class RESTClient(UniversalAPIClient):
    """A ``UniversalAPIClient`` for one REST API (the seed's name for the same thing)."""


class GraphQLClient(UniversalAPIClient):
    """Sends GraphQL operations to one server URL (``endpoint_url``).

    Queries are retried as idempotent and cached when ``cache_ttl_s`` is given; mutations are
    retried only with an idempotency key.
    """

    ENDPOINT = "graphql"

    def __init__(
        self,
        endpoint_url: str,
        *,
        settings: ApiSettings | None = None,
        provider: str = "",
        cache_ttl_s: float | None = None,
        response_schema: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(endpoint_url, settings=settings, provider=provider)
        policy = api_types_pb2.Endpoint()
        if cache_ttl_s is not None:
            policy.cache.enabled = True
            policy.cache.ttl.FromMilliseconds(round(cache_ttl_s * 1000))
        self.register_endpoint(
            APIEndpoint(
                self.ENDPOINT,
                endpoint_url,
                HTTPMethod.POST,
                response_schema=response_schema,
                graphql=True,
                policy=policy,
            )
        )

    async def query(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        operation_name: str = "",
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        idempotency_key: str = "",
    ) -> APIResponse:
        """Run one operation (query or mutation); GraphQL errors are in ``errors``."""
        request = api_service_pb2.GraphQLRequest(
            endpoint=self.ENDPOINT,
            query=query,
            variables_json=json.dumps(variables) if variables is not None else "",
            operation_name=operation_name,
            headers=[api_types_pb2.Header(name=k, value=v) for k, v in (headers or {}).items()],
            idempotency_key=idempotency_key,
        )
        try:
            reply = await GraphQLCaller(self.caller).query(request, time_remaining_s=timeout_s)
        except (InvalidCall, UnknownEndpoint):
            raise
        except ApiError as exc:
            return APIResponse.failed(exc)
        errors = [
            {
                "message": e.message,
                "path": list(e.path),
                "locations": [{"line": loc.line, "column": loc.column} for loc in e.locations],
                **({"extensions": json.loads(e.extensions_json)} if e.extensions_json else {}),
            }
            for e in reply.errors
        ]
        error = reply.validation_error or (errors[0]["message"] if errors else None)
        if error is None and not 200 <= reply.status_code < 300:
            error = f"HTTP {reply.status_code}"
        return APIResponse(
            status_code=reply.status_code,
            data=json.loads(reply.data_json) if reply.data_json else None,
            headers=[(h.name, h.value) for h in reply.headers],
            error=error,
            is_validation_error=bool(reply.validation_error),
            attempts=reply.attempts,
            from_cache=reply.from_cache,
            latency_ms=reply.latency.ToMicroseconds() / 1000,
            errors=errors,
        )

    mutate = query
