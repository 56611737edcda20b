"""Redirect policy: follow 3xx replies up to a limit, never, or only within one origin.

The transport never follows redirects itself; each hop is a new exchange here, so that the
policy is ours (aiohttp has no same-origin mode), every hop's address passes the network policy
before it is contacted, and credentials do not cross origins: on a change of scheme, host or
port, Authorization, Proxy-Authorization and Cookie are dropped. Method rewriting follows what
browsers and aiohttp do (RFC 9110 §15.4): 303 turns any method but HEAD into a body-less GET,
301 and 302 turn POST into GET, 307 and 308 repeat the request as it was. A redirect the policy
does not follow, or one past the limit, is returned to the caller as it came.

All hops of an attempt share the attempt's time limit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

from paca.api.v1 import api_types_pb2

from api_service.errors import UpstreamTimeout
from api_service.transport import HttpRequest

DEFAULT_MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Request headers that carry credentials or describe a body that a rewrite drops.
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class _Reply(Protocol):
    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None: ...


R = TypeVar("R", bound=_Reply)


@dataclass(frozen=True, slots=True)
class RedirectRule:
    """The effective policy of one call."""

    follow: bool = True
    same_origin: bool = False
    max_redirects: int = DEFAULT_MAX_REDIRECTS


DEFAULT_RULE = RedirectRule()


def redirect_rule(
    call: api_types_pb2.RedirectPolicy | None, endpoint: api_types_pb2.RedirectPolicy | None
) -> RedirectRule:
    """The call's policy where it says something, else the endpoint's, else follow up to 10."""
    if call is None and endpoint is None:
        return DEFAULT_RULE
    mode = api_types_pb2.REDIRECT_MODE_UNSPECIFIED
    limit = 0
    for policy in (call, endpoint):
        if policy is None:
            continue
        mode = mode or policy.mode
        limit = limit or policy.max_redirects
    return RedirectRule(
        follow=mode != api_types_pb2.REDIRECT_MODE_OFF,
        same_origin=mode == api_types_pb2.REDIRECT_MODE_SAME_HOST,
        max_redirects=limit or DEFAULT_MAX_REDIRECTS,
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def next_request(request: HttpRequest, status: int, location: str | None) -> HttpRequest | None:
    """The request a redirect asks for (None: not a redirect one can follow)."""
    if status not in REDIRECT_STATUSES or not location:
        return None
    url = urljoin(request.url, location.strip())
    if urlsplit(url).scheme not in {"http", "https"}:
        return None
    method, body, headers = request.method, request.body, request.headers
    if (status == 303 and method != "HEAD") or (status in {301, 302} and method == "POST"):
        method, body = "GET", None
        headers = [(k, v) for k, v in headers if k.lower() not in _BODY_HEADERS]
    if _origin(url) != _origin(request.url):
        headers = [(k, v) for k, v in headers if k.lower() not in _CREDENTIALS]
    return request._replace(method=method, url=url, body=body, headers=headers)


async def follow(
    send: Callable[[HttpRequest], Awaitable[R]],
    request: HttpRequest,
    rule: RedirectRule,
    *,
    check_url: Callable[[str], None],
    discard: Callable[[R], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> R:
    """Send ``request`` and the redirects ``rule`` allows; returns the last reply.

    Raises:
        ForbiddenTarget: A redirect points at an address that may not be called.
        UpstreamTimeout: The hops together took longer than the request's time limit.
        UpstreamError: As ``send``.
    """
    end = clock() + request.timeout_s
    response = await send(request)
    if response.status not in REDIRECT_STATUSES:  # most replies: no header to read
        return response
    hops = 0
    while rule.follow and hops < rule.max_redirects:
        hop = next_request(request, response.status, response.header("location"))
        if hop is None or (rule.same_origin and _origin(hop.url) != _origin(request.url)):
            return response
        check_url(hop.url)
        left = end - clock()
        if left <= 0:
            raise UpstreamTimeout("redirects took longer than the attempt's time limit")
        if discard is not None:
            await discard(response)
        request = hop._replace(timeout_s=left)
        response = await send(request)
        hops += 1
    return response
