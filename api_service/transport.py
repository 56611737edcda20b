"""The HTTP transport: one aiohttp session per process, traced, with secrets kept out of spans.

A session owns a connection pool; opening one per call would pay a TCP (and TLS) handshake each
time, so the transport opens it once and every call shares it. Every address it connects to
passes the ``NetworkPolicy`` (see ``api_service.safety``), and a body is read only up to
``max_response_bytes``.

A request whose client span would be dropped (its call's trace is not sampled: most calls at
the default sampler) goes through a twin session on the same connection pool without the
tracing hooks, with the trace context added to its headers here: aiohttp emits a signal at
every step of a request to a session that has hooks, which costs more CPU per request than
the hooks themselves, for a span nobody keeps.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import NamedTuple

import aiohttp
from opentelemetry import trace

from api_service.errors import (
    ForbiddenTarget,
    InvalidCall,
    ResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api_service.safety import (
    LOOPBACK,
    BlockedAddress,
    GuardedResolver,
    NetworkPolicy,
    parse_networks,
)
from paca_runtime.http_spans import http_client_trace_config
from paca_runtime.semconv import HTTP_REQUEST_RESEND_COUNT
from paca_runtime.telemetry import current_span, dropped_below
from paca_runtime.trace_headers import outbound_trace_headers

USER_AGENT = "paca-api-service/0.1"
# An attempt's time limit may be this much shorter (as a factor) than the time it was given.
_TIMEOUT_SLACK = 1.001
# The attempt number of the request being sent (1 = first), set by the call engine so the HTTP
# client span of each attempt says which one it is.
ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("paca_attempt", default=1)


class HttpRequest(NamedTuple):
    """One request as the engine sends it (immutable: plans and retries share it)."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    timeout_s: float


class HttpResponse(NamedTuple):
    """A whole-body response (immutable: the cache and its plans share it)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:  # a loop: a generator costs twice as much per call
            if key.lower() == lowered:
                return value
        return None


# Requests already sent under each call's span (the current one when a request starts): a
# retry, a redirect hop and a revalidation are all resends (``http.request.resend_count``).
_SENT: weakref.WeakKeyDictionary[trace.Span, int] = weakref.WeakKeyDictionary()


def _request_hook(span: trace.Span, params: aiohttp.TraceRequestStartParams) -> None:
    call = current_span()
    if call.is_recording():
        sent = _SENT.get(call, 0)
        _SENT[call] = sent + 1
    else:  # a sampler that records this request but not its call: attempts are all we know
        sent = ATTEMPT.get() - 1
    if sent:
        span.set_attribute(HTTP_REQUEST_RESEND_COUNT, sent)


def _with_trace_context(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with the current trace context in place of any the caller set, as the
    tracing hooks send it under a parent whose client spans are dropped."""
    carrier = outbound_trace_headers()
    if not carrier:
        return headers
    if not headers:
        return list(carrier.items())
    return [*(h for h in headers if h[0].lower() not in carrier), *carrier.items()]


class HttpTransport:
    """Sends HTTP requests over a shared connection pool.

    Lifecycle: ``open()`` once, ``send()`` any number of times, ``aclose()`` (idempotent).

    Args:
        max_connections: Open connections at most, over all hosts.
        network_policy: Addresses that may be called (default: public ones and loopback).
        max_response_bytes: Longer bodies fail the call with ResponseTooLarge.
    """

    def __init__(
        self,
        max_connections: int = 512,
        *,
        network_policy: NetworkPolicy | None = None,
        max_response_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.max_connections = max_connections
        self.network_policy = network_policy or NetworkPolicy(parse_networks(LOOPBACK))
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        # The same pool without the tracing hooks, for requests whose span would be dropped.
        self._untraced: aiohttp.ClientSession | None = None
        self._last_timeout = aiohttp.ClientTimeout()

    def __repr__(self) -> str:
        state = "open" if self._session and not self._session.closed else "closed"
        return f"<HttpTransport {state} max_connections={self.max_connections}>"

    async def open(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            ttl_dns_cache=60,
            resolver=GuardedResolver(self.network_policy),
            socket_factory=self.network_policy.socket_factory,
        )
        # No cookie jar: the sessions serve every caller, and a cookie one upstream sets on
        # one caller's call must never ride along on another's. A caller that wants a cookie
        # sees Set-Cookie in its reply and sends Cookie itself.
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            trace_configs=[http_client_trace_config(_request_hook)],
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._untraced = aiohttp.ClientSession(
            connector=connector,
            connector_owner=False,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session, for exchanges that manage the response themselves (streaming)."""
        if self._session is None:
            raise UpstreamUnavailable("HTTP transport is not open")
        return self._session

    async def aclose(self) -> None:
        if self._untraced is not None:
            untraced, self._untraced = self._untraced, None
            await untraced.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, request: HttpRequest) -> HttpResponse:
        """One HTTP exchange; the whole response body is read.

        Raises:
            UpstreamTimeout: No complete response within ``timeout_s``.
            UpstreamUnavailable: The connection failed or broke.
            InvalidCall: aiohttp refused the URL.
        """
        session, headers = self._session, request.headers
        if session is None or self._untraced is None:
            raise UpstreamUnavailable("HTTP transport is not open")
        if dropped_below(current_span()):
            session, headers = self._untraced, _with_trace_context(headers)
        try:
            async with session.request(
                request.method,
                request.url,
                headers=headers,
                data=request.body,
                timeout=self._timeout(request.timeout_s),
                # Redirects are the call engine's (api_service.redirects): its policy, its checks.
                allow_redirects=False,
            ) as response:
                body = await self._read(response)
                return HttpResponse(
                    status=response.status,
                    headers=list(response.headers.items()),
                    body=body,
                    url=str(response.url),
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream did not answer within {request.timeout_s:.3g} s"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                raise ForbiddenTarget(exc.host) from None
            raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}: {exc}") from exc
        except aiohttp.InvalidURL as exc:
            raise InvalidCall("url", f"malformed URL: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}: {exc}") from exc

    def _timeout(self, total_s: float) -> aiohttp.ClientTimeout:
        """aiohttp's timeout of ``total_s``, or the last one made (immutable) when it is at
        most 0.1 % shorter: a call under a deadline asks for what is left of it, a little
        less each time, and a new ClientTimeout per call would cost more CPU than the rest
        of the timeout handling. Never longer than asked: the deadline still holds."""
        timeout = self._last_timeout
        last = timeout.total
        if last is None or not last <= total_s <= last * _TIMEOUT_SLACK:
            timeout = self._last_timeout = aiohttp.ClientTimeout(total=total_s)
        return timeout

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, or ResponseTooLarge as soon as it passes the limit."""
        limit = self.max_response_bytes
        length = response.content_length
        if length is not None and length > limit:
            raise ResponseTooLarge(limit)
        if length is not None and "Content-Encoding" not in response.headers:
            # The parser stops at Content-Length and nothing decodes it larger: read at once.
            return await response.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)
