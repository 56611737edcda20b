"""The endpoint registry: named upstream endpoints with their policies.

Endpoints are validated when registered, so a call never meets a half-valid endpoint. This
registry keeps them in process memory; a registry shared by replicas through db_service stores
the same ``Endpoint`` messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from google.protobuf import timestamp_pb2
from paca.api.v1 import api_types_pb2

from api_service.errors import InvalidCall, UnknownEndpoint

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_WHITESPACE = re.compile(r"\s")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_PROVIDER_CHARS = 50


def check_http_url(url: str, field: str) -> None:
    """An absolute http(s) URL with a host, or InvalidCall naming ``field``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidCall(field, f"malformed URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise InvalidCall(field, f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise InvalidCall(field, "URL has no host")
    if _WHITESPACE.search(url):  # what str.isspace() calls whitespace, in one C scan
        raise InvalidCall(field, "URL contains whitespace")


def validate_endpoint(endpoint: api_types_pb2.Endpoint, field: str = "endpoint") -> None:
    """Raise InvalidCall naming the first bad field of ``endpoint``."""
    if not _NAME.match(endpoint.name):
        raise InvalidCall(
            f"{field}.name", "1-100 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    if not endpoint.provider:
        raise InvalidCall(f"{field}.provider", "required")
    if len(endpoint.provider) > MAX_PROVIDER_CHARS:
        raise InvalidCall(f"{field}.provider", f"at most {MAX_PROVIDER_CHARS} characters")
    check_http_url(endpoint.base_url, f"{field}.base_url")
    if endpoint.path and not endpoint.path.startswith("/"):
        raise InvalidCall(f"{field}.path", "must start with '/'")
    if endpoint.method not in api_types_pb2.HttpMethod.values():
        raise InvalidCall(f"{field}.method", f"unknown method {endpoint.method}")
    if endpoint.HasField("timeout") and endpoint.timeout.ToTimedelta().total_seconds() <= 0:
        raise InvalidCall(f"{field}.timeout", "must be > 0")
    for i, header in enumerate(endpoint.default_headers):
        check_header(header, f"{field}.default_headers[{i}]")
    _validate_policies(endpoint, field)
    if endpoint.response_schema_json:
        try:
            json.loads(endpoint.response_schema_json)
        except ValueError:
            raise InvalidCall(f"{field}.response_schema_json", "not valid JSON") from None


def _validate_policies(endpoint: api_types_pb2.Endpoint, field: str) -> None:
    retry = endpoint.retry
    if retry.max_attempts < 0:
        raise InvalidCall(f"{field}.retry.max_attempts", "must be >= 0")
    for name in ("initial_backoff", "max_backoff"):
        if getattr(retry, name).ToTimedelta().total_seconds() < 0:
            raise InvalidCall(f"{field}.retry.{name}", "must be >= 0")
    if retry.backoff_multiplier and retry.backoff_multiplier < 1:
        raise InvalidCall(f"{field}.retry.backoff_multiplier", "must be >= 1 (0: default)")
    for i, code in enumerate(retry.retryable_status_codes):
        if not 100 <= code <= 599:
            raise InvalidCall(f"{field}.retry.retryable_status_codes[{i}]", "not an HTTP status")
    breaker = endpoint.circuit_breaker
    if not 0 <= breaker.failure_rate_threshold <= 1:
        raise InvalidCall(f"{field}.circuit_breaker.failure_rate_threshold", "must be in [0, 1]")
    for name in ("consecutive_failures", "minimum_calls", "half_open_probes"):
        if getattr(breaker, name) < 0:
            raise InvalidCall(f"{field}.circuit_breaker.{name}", "must be >= 0")
    for name in ("window", "open_duration"):
        if getattr(breaker, name).ToTimedelta().total_seconds() < 0:
            raise InvalidCall(f"{field}.circuit_breaker.{name}", "must be >= 0")
    auth = endpoint.auth
    if auth.placement not in api_types_pb2.KeyPlacement.values():
        raise InvalidCall(f"{field}.auth.placement", f"unknown placement {auth.placement}")
    if auth.strategy not in api_types_pb2.KeyStrategy.values():
        raise InvalidCall(f"{field}.auth.strategy", f"unknown strategy {auth.strategy}")
    named = {api_types_pb2.KEY_PLACEMENT_HEADER, api_types_pb2.KEY_PLACEMENT_QUERY}
    if auth.placement in named and not _TOKEN.match(auth.parameter_name):
        raise InvalidCall(
            f"{field}.auth.parameter_name", "a header or query parameter name is required"
        )
    if auth.key_pool and not _NAME.match(auth.key_pool):
        raise InvalidCall(f"{field}.auth.key_pool", "letters, digits, '.', '_' or '-'")
    limit = endpoint.rate_limit
    if limit.requests_per_second < 0:
        raise InvalidCall(f"{field}.rate_limit.requests_per_second", "must be >= 0")
    for name in ("burst", "max_concurrency"):
        if getattr(limit, name) < 0:
            raise InvalidCall(f"{field}.rate_limit.{name}", "must be >= 0")


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_header(header: api_types_pb2.Header, field: str) -> None:
    if not _TOKEN.match(header.name):
        raise InvalidCall(f"{field}.name", f"not a valid header name: {header.name!r}")
    if "\r" in header.value or "\n" in header.value:
        raise InvalidCall(f"{field}.value", "must not contain CR or LF")


def path_placeholders(path: str) -> list[str]:
    return _PLACEHOLDER.findall(path)


class APIRegistry:
    """Registered endpoints by name, in process memory (the default without db_service).

    The call engine and the servicer use the async methods (``save``, ``delete``, ``fetch``):
    a registry kept elsewhere (:class:`api_service.registry_store.DurableRegistry`) does I/O
    there. ``get`` never waits: it answers from memory.

    Args:
        clock: Wall clock for create/update times (injectable for tests).
    """

    def __init__(self, clock: Callable[[], timestamp_pb2.Timestamp] | None = None) -> None:
        self._endpoints: dict[str, api_types_pb2.Endpoint] = {}
        self._clock = clock or _now

    def __repr__(self) -> str:
        return f"<APIRegistry endpoints={len(self._endpoints)}>"

    def __len__(self) -> int:
        return len(self._endpoints)

    def register(self, endpoint: api_types_pb2.Endpoint) -> tuple[api_types_pb2.Endpoint, bool]:
        """Validate and store; returns the stored copy and whether it is new."""
        validate_endpoint(endpoint)
        stored = api_types_pb2.Endpoint()
        stored.CopyFrom(endpoint)
        now = self._clock()
        previous = self._endpoints.get(endpoint.name)
        stored.create_time.CopyFrom(previous.create_time if previous else now)
        stored.update_time.CopyFrom(now)
        self._endpoints[endpoint.name] = stored
        return stored, previous is None

    def get(self, name: str, field: str = "name") -> api_types_pb2.Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise UnknownEndpoint(name, field) from None

    def list(self, provider: str = "") -> list[api_types_pb2.Endpoint]:
        return [
            e for _, e in sorted(self._endpoints.items()) if not provider or e.provider == provider
        ]

    def remove(self, name: str) -> None:
        if self._endpoints.pop(name, None) is None:
            raise UnknownEndpoint(name, "name")

    def __contains__(self, name: object) -> bool:
        return name in self._endpoints

    async def save(self, endpoint: api_types_pb2.Endpoint) -> tuple[api_types_pb2.Endpoint, bool]:
        """``register``, where the registry is kept (here: memory)."""
        return self.register(endpoint)

    async def delete(self, name: str) -> None:
        """``remove``, where the registry is kept (here: memory)."""
        self.remove(name)

    async def fetch(self, name: str, field: str = "name") -> api_types_pb2.Endpoint:
        """``get``, looking where the registry is kept when memory does not know ``name``."""
        return self.get(name, field)

    async def open(self) -> None:
        """Load what the registry is kept in (nothing to do in memory)."""

    async def aclose(self) -> None:
        """Stop background work (none in memory); idempotent."""


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp
