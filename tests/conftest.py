"""Fixtures shared by every level: backing-engine URLs and a local HTTP upstream."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web


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
