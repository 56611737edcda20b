"""The values of in-process calls: ``HTTPMethod``, ``APIEndpoint`` and ``APIResponse``.

The seed README's names for what goes into and comes out of ``UniversalAPIClient`` (see
``api_service.facade``): an endpoint as a plain dataclass that becomes the ``Endpoint`` message
the registry stores, and a response whose ``data`` is the body as JSON, text or bytes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from paca.api.v1 import api_types_pb2

from api_service.errors import ApiError


class HTTPMethod(enum.StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"
    OPTIONS = "OPTIONS"

    @property
    def proto(self) -> api_types_pb2.HttpMethod.ValueType:
        return api_types_pb2.HttpMethod.Value(f"HTTP_METHOD_{self.value}")


@dataclass
class APIEndpoint:
    """A named endpoint: ``url`` is a path joined to the client's base URL, or absolute.

    ``policy`` carries whatever else an ``Endpoint`` message can say (retry, circuit breaker,
    rate limit, cache, redirects, auth); the fields here win over it.
    """

    name: str
    url: str
    method: HTTPMethod = HTTPMethod.GET
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    provider: str = ""
    # JSON Schema the response body must fit (a misfit is a validation error).
    response_schema: Mapping[str, Any] | None = None
    graphql: bool = False
    policy: api_types_pb2.Endpoint | None = None

    def to_proto(self, base_url: str) -> api_types_pb2.Endpoint:
        """The ``Endpoint`` message registered for this endpoint under ``base_url``."""
        endpoint = api_types_pb2.Endpoint()
        if self.policy is not None:
            endpoint.CopyFrom(self.policy)
        parts = urlsplit(self.url)
        if parts.scheme:
            base, path = f"{parts.scheme}://{parts.netloc}", self.url[len(parts.scheme) + 3 :]
            path = path[len(parts.netloc) :]
        else:
            base, path = base_url, self.url
        if path and not path.startswith("/"):
            path = "/" + path
        endpoint.name = self.name
        endpoint.base_url = base
        endpoint.path = path
        endpoint.provider = self.provider or endpoint.provider or urlsplit(base).hostname or ""
        endpoint.method = self.method.proto
        endpoint.default_headers.extend(
            api_types_pb2.Header(name=k, value=v) for k, v in self.headers.items()
        )
        if self.timeout_s is not None:
            endpoint.timeout.FromMilliseconds(round(self.timeout_s * 1000))
        if self.response_schema is not None:
            endpoint.response_schema_json = json.dumps(self.response_schema)
        if self.graphql:
            endpoint.kind = api_types_pb2.ENDPOINT_KIND_GRAPHQL
        return endpoint


@dataclass(frozen=True)
class APIResponse:
    """The result of one request; ``is_success`` says whether ``data`` is worth using."""

    status_code: int = 0
    # Parsed JSON when the body is JSON, else text (or bytes when it does not decode).
    data: Any = None
    headers: Sequence[tuple[str, str]] = ()
    # Why it failed: no response, an error status, GraphQL errors or a schema misfit.
    error: str | None = None
    # gRPC status name of a failure without a response (e.g. "UNAVAILABLE").
    error_code: str | None = None
    is_validation_error: bool = False
    attempts: int = 0
    from_cache: bool = False
    latency_ms: float = 0.0
    # GraphQL errors (message, path, locations, extensions) as the server sent them.
    errors: Sequence[Mapping[str, Any]] = ()

    @property
    def is_success(self) -> bool:
        return self.error is None and 200 <= self.status_code < 400

    @classmethod
    def failed(cls, exc: ApiError) -> APIResponse:
        return cls(error=str(exc), error_code=exc.code.name)


def decode_body(body: bytes, headers: Sequence[api_types_pb2.Header]) -> Any:
    """A body as JSON when its content type says so, else text, else the bytes."""
    content_type = next((h.value for h in headers if h.name.lower() == "content-type"), "")
    if "json" in content_type.lower():
        try:
            return json.loads(body)
        except ValueError:
            pass
    try:
        return body.decode()
    except UnicodeDecodeError:
        return body
