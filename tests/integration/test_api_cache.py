"""The response cache through ApiService.Call against a local upstream that counts its requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from aiohttp import web
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service import ApiApp
from api_service.cache import MemoryStore, ResponseCache

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@dataclass
class CachingUpstream:
    url: str = ""
    hits: dict[str, int] = field(default_factory=dict)
    conditional: list[str | None] = field(default_factory=list)
    # /held answers only once this is set; ``held`` is set when its first request arrives.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False


STATE = web.AppKey("state", CachingUpstream)
T = TypeVar("T")


class JoinCountingCache(ResponseCache):
    """Says when ``joiners`` calls have joined an upstream request already in flight."""

    def __init__(self, store: MemoryStore, joiners: int) -> None:
        super().__init__(store)
        self.joiners = joiners
        self.all_joined = asyncio.Event()

    async def coalesce(self, key: str, fetch: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        if key in self._inflight:
            self.joiners -= 1
            if self.joiners == 0:
                self.all_joined.set()
        return await super().coalesce(key, fetch)


def _count(request: web.Request) -> tuple[CachingUpstream, int]:
    state = request.app[STATE]
    name = request.match_info["name"]
    state.hits[name] = state.hits.get(name, 0) + 1
    return state, state.hits[name]


async def _fresh(request: web.Request) -> web.Response:
    _, hit = _count(request)
    return web.json_response({"hit": hit}, headers={"Cache-Control": "max-age=60"})


async def _no_store(request: web.Request) -> web.Response:
    _, hit = _count(request)
    return web.json_response({"hit": hit}, headers={"Cache-Control": "no-store"})


async def _etag(request: web.Request) -> web.Response:
    state, hit = _count(request)
    state.conditional.append(request.headers.get("If-None-Match"))
    headers = {"ETag": '"v1"', "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == '"v1"':
        return web.Response(status=304, headers=headers)
    return web.json_response({"hit": hit}, headers=headers)


async def _flaky(request: web.Request) -> web.Response:
    state, hit = _count(request)
    if state.failing:
        return web.Response(status=503, text="down")
    return web.json_response({"hit": hit}, headers={"Cache-Control": "max-age=0"})


async def _held(request: web.Request) -> web.Response:
    state, hit = _count(request)
    state.held.set()
    await state.release.wait()
    # no-store: only coalescing, not a stored entry, can spare the upstream the other requests.
    return web.json_response({"hit": hit}, headers={"Cache-Control": "no-store"})


@pytest.fixture
async def caching_upstream() -> AsyncIterator[CachingUpstream]:
    state = CachingUpstream()
    app = web.Application()
    app[STATE] = state
    for name, handler in {
        "fresh": _fresh,
        "no-store": _no_store,
        "etag": _etag,
        "flaky": _flaky,
        "held": _held,
    }.items():
        app.router.add_get(f"/{{name:{name}}}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


async def register(
    stub: api_service_pb2_grpc.ApiServiceStub, upstream: CachingUpstream, path: str, **cache: object
) -> str:
    name = "cached" + path.replace("/", ".")
    endpoint = api_types_pb2.Endpoint(
        name=name,
        provider="cached",
        base_url=upstream.url,
        path=path,
        cache=api_types_pb2.CachePolicy(enabled=True, **cache),  # type: ignore[arg-type]
        retry=api_types_pb2.RetryPolicy(max_attempts=1),
    )
    await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
    return name


async def test_fresh_entry_answers_from_cache_without_upstream_request_or_call_record(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    caching_upstream: CachingUpstream,
) -> None:
    name = await register(api_stub, caching_upstream, "/fresh")
    first = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    second = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    assert (first.from_cache, first.attempts) == (False, 1)
    assert (second.from_cache, second.attempts) == (True, 0)
    assert second.body == first.body
    assert caching_upstream.hits == {"fresh": 1}
    await api_app.recorder.flushed()
    assert api_app.recorder.recorded == 1


async def test_100_concurrent_identical_gets_reach_the_upstream_once(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    caching_upstream: CachingUpstream,
) -> None:
    name = await register(api_stub, caching_upstream, "/held")
    cache = JoinCountingCache(MemoryStore(1 << 20), joiners=99)
    api_app.caller.cache = cache
    calls = [
        asyncio.ensure_future(api_stub.Call(api_service_pb2.CallRequest(endpoint=name)))
        for _ in range(100)
    ]
    await caching_upstream.held.wait()
    await cache.all_joined.wait()
    caching_upstream.release.set()
    replies = await asyncio.gather(*calls)
    assert caching_upstream.hits == {"held": 1}
    assert {r.body for r in replies} == {b'{"hit": 1}'}
    assert sum(r.from_cache for r in replies) == 99
    stats = await api_stub.GetStats(api_service_pb2.GetStatsRequest(endpoint=name))
    assert (stats.stats[0].cache_hits, stats.stats[0].cache_misses) == (99, 1)
    assert stats.stats[0].cache_hit_ratio == pytest.approx(0.99)


async def test_no_store_response_is_fetched_again(
    api_stub: api_service_pb2_grpc.ApiServiceStub, caching_upstream: CachingUpstream
) -> None:
    name = await register(api_stub, caching_upstream, "/no-store")
    for _ in range(2):
        reply = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
        assert not reply.from_cache
    assert caching_upstream.hits == {"no-store": 2}


async def test_stale_entry_with_etag_is_revalidated_and_a_304_serves_the_stored_body(
    api_stub: api_service_pb2_grpc.ApiServiceStub, caching_upstream: CachingUpstream
) -> None:
    name = await register(api_stub, caching_upstream, "/etag")
    first = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    second = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    assert caching_upstream.conditional == [None, '"v1"']
    assert (second.status_code, second.body) == (200, first.body)
    assert (second.from_cache, second.attempts) == (True, 1)


async def test_stale_entry_is_served_when_the_upstream_fails_within_stale_if_error(
    api_stub: api_service_pb2_grpc.ApiServiceStub, caching_upstream: CachingUpstream
) -> None:
    stale_if_error = api_types_pb2.CachePolicy().stale_if_error
    stale_if_error.FromSeconds(60)
    name = await register(api_stub, caching_upstream, "/flaky", stale_if_error=stale_if_error)
    first = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    caching_upstream.failing = True
    second = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    assert caching_upstream.hits == {"flaky": 2}
    assert (second.status_code, second.body, second.from_cache) == (200, first.body, True)


async def test_endpoint_without_stale_if_error_returns_the_upstream_failure(
    api_stub: api_service_pb2_grpc.ApiServiceStub, caching_upstream: CachingUpstream
) -> None:
    name = await register(api_stub, caching_upstream, "/flaky")
    await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    caching_upstream.failing = True
    second = await api_stub.Call(api_service_pb2.CallRequest(endpoint=name))
    assert (second.status_code, second.from_cache) == (503, False)
