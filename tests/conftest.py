"""Fixtures shared by every level: backing-engine URLs and a local HTTP upstream."""

from __future__ import annotations

import asyncio
import base64
import gzip
import inspect
import json
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def backing_url(name: str) -> str:
    """URL of a backing engine from ``scripts/backing_services.sh`` (``var/backing/env``).

    Skips the test when the engine is not configured, except under CI, where a missing engine
    is a broken setup and fails the test.
    """
    url = os.environ.get(name, "")
    if not url:
        message = f"{name} is not set: run `make test` (or scripts/backing_services.sh up)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def mongodb_url() -> str:
    """The MongoDB-protocol test server (FerretDB, mongo-java-server or MONGODB_URL)."""
    return backing_url("PACA_TEST_MONGODB_URL")


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, period_s: float = 0.05
) -> None:
    """Wait for a condition nothing signals (another process's or task's state, a counter);
    fails the test after ``timeout_s``. ``check`` may be a plain or an async function.

    With no event to await, this polls at a short, fixed period.
    """

    async def holds() -> bool:
        result = check()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    async with asyncio.timeout(timeout_s):
        while not await holds():  # noqa: ASYNC110
            await asyncio.sleep(period_s)


@dataclass
class Upstream:
    """A local HTTP server standing in for a third-party API."""

    url: str
    requests: list[web.Request] = field(default_factory=list)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    # Set when a request reaches /slow, so a test can act while that call is in flight.
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    # Requests seen by each /flaky/{key}.
    flaky_hits: dict[str, int] = field(default_factory=dict)
    # Credentials /keyed saw, in order (see _keyed).
    keys_seen: list[str] = field(default_factory=list)
    # OAuth2: tokens /oauth/token issued, those /oauth/protected refuses, token lifetime.
    tokens_issued: list[str] = field(default_factory=list)
    tokens_revoked: set[str] = field(default_factory=set)
    token_lifetime_s: int = 3600


UPSTREAM = web.AppKey("upstream", Upstream)


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    upstream = request.app[UPSTREAM]
    upstream.seen_headers.append(dict(request.headers))
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": [[k, v] for k, v in request.query.items()],
            "headers": dict(request.headers),
            "body": body.decode(errors="replace"),
        },
        headers={"X-Upstream": "echo"},
    )


async def _status(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    upstream.seen_headers.append(dict(request.headers))
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code}")


async def _binary(request: web.Request) -> web.Response:
    payload = bytes(range(256)) * 64
    response = web.Response(body=payload, content_type="application/octet-stream")
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


async def _slow(request: web.Request) -> web.Response:
    # A slow upstream is a fault we produce for real: the handler holds the response.
    request.app[UPSTREAM].slow_started.set()
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="late")


async def _flaky(request: web.Request) -> web.Response:
    """Fails the first ``fail`` requests of each key with ``status`` (and ``retry_after``)."""
    upstream = request.app[UPSTREAM]
    upstream.seen_headers.append(dict(request.headers))
    key = request.match_info["key"]
    hit = upstream.flaky_hits[key] = upstream.flaky_hits.get(key, 0) + 1
    if hit <= int(request.query.get("fail", "0")):
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        status = int(request.query.get("status", "503"))
        return web.Response(status=status, text=f"failure {hit}", headers=headers)
    return web.json_response({"hit": hit})


OAUTH_CLIENT_ID = "client-id"
OAUTH_CLIENT_SECRET = "cl1ent-s3cret"


def _credential(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ")
    if auth.startswith("Basic "):
        return base64.b64decode(auth.removeprefix("Basic ")).decode()
    return request.headers.get("X-Api-Key") or request.query.get("appid", "")


async def _keyed(request: web.Request) -> web.Response:
    """A provider with per-key answers: a key containing "revoked" gets 401, "throttled" 429
    with Retry-After (query retry_after, default 60); others 200 with X-RateLimit headers when
    the query gives remaining (and reset)."""
    upstream = request.app[UPSTREAM]
    key = _credential(request)
    upstream.keys_seen.append(key)
    if not key or "revoked" in key:
        return web.Response(status=401, text="bad key")
    if "throttled" in key:
        return web.Response(
            status=429,
            text="slow down",
            headers={"Retry-After": request.query.get("retry_after", "60")},
        )
    headers = {}
    if "remaining" in request.query:
        headers["X-RateLimit-Remaining"] = request.query["remaining"]
        headers["X-RateLimit-Reset"] = request.query.get("reset", "60")
    return web.json_response({"ok": True}, headers=headers)


async def _etag(request: web.Request) -> web.Response:
    """A resource with an ETag that must be revalidated on every use (no-cache): 304 when the
    request's If-None-Match matches."""
    upstream = request.app[UPSTREAM]
    upstream.seen_headers.append(dict(request.headers))
    headers = {"ETag": '"v1"', "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == '"v1"':
        return web.Response(status=304, headers=headers)
    return web.json_response({"version": 1}, headers=headers)


async def _oauth_token(request: web.Request) -> web.Response:
    """RFC 6749 client-credentials token endpoint (HTTP Basic client authentication)."""
    upstream = request.app[UPSTREAM]
    form = await request.post()
    expected = f"{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"
    if _credential(request) != expected or form.get("grant_type") != "client_credentials":
        return web.json_response({"error": "invalid_client"}, status=401)
    await asyncio.sleep(float(request.query.get("delay", "0")))
    token = f"tok-{len(upstream.tokens_issued) + 1}-{form.get('scope', '')}"
    upstream.tokens_issued.append(token)
    return web.json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": upstream.token_lifetime_s}
    )


async def _oauth_protected(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    token = _credential(request)
    upstream.keys_seen.append(token)
    if token not in upstream.tokens_issued or token in upstream.tokens_revoked:
        return web.Response(status=401, text="invalid token")
    return web.json_response({"token_ok": True})


async def _graphql(request: web.Request) -> web.Response:
    """A GraphQL server: echoes variables and operationName with a hit count; a query that
    mentions "boom" gets partial data with an error, one that mentions "shape" data of the
    wrong shape."""
    upstream = request.app[UPSTREAM]
    upstream.requests.append(request)
    payload = await request.json()
    query = str(payload.get("query", ""))
    if "boom" in query:
        error = {
            "message": "user not found",
            "path": ["user", 0],
            "locations": [{"line": 1, "column": 3}],
            "extensions": {"code": "NOT_FOUND"},
        }
        return web.json_response({"data": {"user": None, "ok": 1}, "errors": [error]})
    if "shape" in query:
        return web.json_response({"data": {"hits": "many"}})
    data = {
        "hits": len(upstream.requests),
        "variables": payload.get("variables"),
        "operationName": payload.get("operationName"),
    }
    return web.json_response({"data": data})


async def _big(request: web.Request) -> web.StreamResponse:
    """``mb`` MiB of bytes, written 64 KiB at a time (never held whole)."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = int(request.query.get("mb", "1")) * 1024 * 1024
    await response.prepare(request)
    block = bytes(range(256)) * 256
    for _ in range(response.content_length // len(block)):
        await response.write(block)
    await response.write_eof()
    return response


async def _hops(request: web.Request) -> web.Response:
    """/hops/N redirects (302) to /hops/N-1; /hops/0 echoes; /hops/N?to=URL ends at URL."""
    n = int(request.match_info["n"])
    if n > 0:
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPFound(f"/hops/{n - 1}{query}")
    if "to" in request.query:
        raise web.HTTPFound(request.query["to"])
    return await _echo(request)


async def _compressed(request: web.Request) -> web.Response:
    """A compressible JSON body in the Content-Encoding named by ``coding`` (gzip, deflate, br)."""
    import brotli  # type: ignore[import-untyped]  # aiohttp's server does not encode br

    body = json.dumps({"items": ["compressible"] * 2000}).encode()
    coding = request.query.get("coding", "gzip")
    encode = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[coding]
    return web.Response(
        body=encode(body),
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream(url="")
    app = web.Application()
    app[UPSTREAM] = state
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_get("/status/{code:\\d+}", _status)
    app.router.add_get("/binary", _binary)
    app.router.add_get("/slow", _slow)
    app.router.add_route("*", "/flaky/{key}", _flaky)
    app.router.add_post("/graphql", _graphql)
    app.router.add_get("/big", _big)
    app.router.add_route("*", "/hops/{n:\\d+}", _hops)
    app.router.add_get("/compressed", _compressed)
    app.router.add_route("*", "/keyed", _keyed)
    app.router.add_get("/etag", _etag)
    app.router.add_post("/oauth/token", _oauth_token)
    app.router.add_get("/oauth/protected", _oauth_protected)
    # Held /slow responses must not hold up teardown.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def json_body(body: bytes) -> dict[str, object]:
    decoded = json.loads(body)
    assert isinstance(decoded, dict)
    return decoded


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans this process finishes during the test; installs an SDK tracer provider once if
    none is set (a provider cannot be replaced, so each test adds an exporter and retires it)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    # The provider keeps its processors; an emptied, shut-down exporter drops further spans.
    exporter.clear()
    exporter.shutdown()
