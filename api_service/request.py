"""From a ``CallRequest`` to an HTTP request: resolve the endpoint or URL, validate, build.

Everything here is checked before anything is sent, so a bad request is refused with
INVALID_ARGUMENT naming the field and never reaches the upstream or the call log.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.errors import InvalidCall, UpstreamTimeout
from api_service.registry import (
    MAX_PROVIDER_CHARS,
    APIRegistry,
    check_header,
    check_http_url,
    path_placeholders,
)
from api_service.transport import HttpRequest

_METHODS = {
    value: name.removeprefix("HTTP_METHOD_")
    for name, value in api_types_pb2.HttpMethod.items()
    if value != api_types_pb2.HTTP_METHOD_UNSPECIFIED
}


# The Target of each registered endpoint whose calls add nothing to it (no method, no path
# parameters), by the endpoint's identity: the registry replaces a stored endpoint on every
# change and never edits one in place, so the entry is checked by identity and most calls skip
# the rebuild. Bounded; emptied when full.
_MAX_TARGETS = 4096


@dataclass(frozen=True, slots=True)
class Target:
    """Where a call goes and what applies to it, resolved from a CallRequest."""

    url: str
    method: str
    provider: str
    endpoint: str
    headers: list[tuple[str, str]]
    timeout_s: float | None
    # The registered endpoint, whose policies apply; None for a call to a URL.
    spec: api_types_pb2.Endpoint | None = None


_TARGETS: dict[int, tuple[api_types_pb2.Endpoint, Target]] = {}
# The Target of each checked call to a URL, by (url, provider, method): a Target is immutable
# and one URL is usually called many times, so its parse and checks run once. Bounded; emptied
# when full.
_URL_TARGETS: dict[tuple[str, str, str], Target] = {}


def resolve(registry: APIRegistry, request: api_service_pb2.CallRequest) -> Target:
    kind = request.WhichOneof("target")
    if kind is None:
        raise InvalidCall("target", "set endpoint or url")
    method = _METHODS.get(request.method) if request.method else None
    if request.method and method is None:
        raise InvalidCall("method", f"unknown method {request.method}")
    if kind == "url":
        key = (request.url, request.provider, method or "GET")
        known = _URL_TARGETS.get(key)
        if known is not None:
            return known
        check_http_url(request.url, "url")
        provider = request.provider or urlsplit(request.url).hostname or "unknown"
        if len(provider) > MAX_PROVIDER_CHARS:
            raise InvalidCall("provider", f"at most {MAX_PROVIDER_CHARS} characters")
        if len(_URL_TARGETS) >= _MAX_TARGETS:
            _URL_TARGETS.clear()
        target = _URL_TARGETS[key] = Target(request.url, key[2], provider, "", [], None)
        return target
    endpoint = registry.get(request.endpoint, field="endpoint")
    if not request.method:
        remembered = _TARGETS.get(id(endpoint))
        if remembered is not None and remembered[0] is endpoint:
            return remembered[1]
    target = _endpoint_target(endpoint, request, method)
    if not request.method and not request.path_params and "{" not in endpoint.path:
        if len(_TARGETS) >= _MAX_TARGETS:
            _TARGETS.clear()
        _TARGETS[id(endpoint)] = (endpoint, target)
    return target


def _endpoint_target(
    endpoint: api_types_pb2.Endpoint, request: api_service_pb2.CallRequest, method: str | None
) -> Target:
    path = endpoint.path
    for name in path_placeholders(path):
        if name not in request.path_params:
            raise InvalidCall(f"path_params.{name}", "required by the endpoint's path")
        path = path.replace("{" + name + "}", quote(request.path_params[name], safe=""))
    return Target(
        url=endpoint.base_url.rstrip("/") + path,
        method=method or _METHODS.get(endpoint.method, "GET"),
        provider=endpoint.provider,
        endpoint=endpoint.name,
        headers=[(h.name, h.value) for h in endpoint.default_headers],
        timeout_s=(
            endpoint.timeout.ToTimedelta().total_seconds() if endpoint.HasField("timeout") else None
        ),
        spec=endpoint,
    )


def build(
    request: api_service_pb2.CallRequest,
    target: Target,
    default_timeout_s: float,
    time_remaining_s: float | None,
) -> HttpRequest:
    overridden: set[str] = set()
    if request.headers:
        for i, header in enumerate(request.headers):
            check_header(header, f"headers[{i}]")
        overridden = {h.name.lower() for h in request.headers}
        headers = [(k, v) for k, v in target.headers if k.lower() not in overridden]
        headers += [(h.name, h.value) for h in request.headers]
    else:
        headers = list(target.headers)
    body: bytes | None = None
    body_kind = request.WhichOneof("body")
    if body_kind == "json_body":
        try:
            json.loads(request.json_body)
        except ValueError as exc:
            raise InvalidCall("json_body", f"not valid JSON: {exc}") from None
        body = request.json_body.encode()
        if "content-type" not in overridden:
            headers.append(("Content-Type", "application/json"))
    elif body_kind == "raw_body":
        body = request.raw_body
    if (
        "@" in target.url  # no userinfo, no password: the common case skips the parse
        and "authorization" in overridden | {k.lower() for k, _ in target.headers}
        and urlsplit(target.url).password is not None
    ):
        # aiohttp would refuse the pair deep in the send; say which field is at fault first.
        raise InvalidCall(
            "headers", "an Authorization header cannot be combined with a URL's password"
        )
    if request.idempotency_key:
        headers.append(("Idempotency-Key", request.idempotency_key))
    url = target.url
    if request.query:
        separator = "&" if urlsplit(url).query else "?"
        url += separator + urlencode([(q.name, q.value) for q in request.query])
    timeout_s = target.timeout_s or default_timeout_s
    if request.HasField("timeout"):
        timeout_s = request.timeout.ToTimedelta().total_seconds()
        if timeout_s <= 0:
            raise InvalidCall("timeout", "must be > 0")
    if time_remaining_s is not None:
        if time_remaining_s <= 0:
            raise UpstreamTimeout("the caller's deadline had passed before the call")
        timeout_s = min(timeout_s, time_remaining_s)
    return HttpRequest(target.method, url, headers, body, timeout_s)


def gzipped(request: HttpRequest) -> HttpRequest:
    """The request with its body gzip-compressed, unless it already names an encoding."""
    if any(k.lower() == "content-encoding" for k, _ in request.headers):
        return request
    assert request.body is not None
    return request._replace(
        body=gzip.compress(request.body),
        headers=[*request.headers, ("Content-Encoding", "gzip")],
    )
