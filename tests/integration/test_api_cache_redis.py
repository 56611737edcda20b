"""The Redis cache store on a real Redis: shared entries, TTL, and degrading when Redis is away."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.cache import CacheEntry, MemoryStore
from api_service.cache_redis import RedisStore, decode, encode
from api_service.settings import ResilienceSettings
from api_service.transport import HttpResponse
from db_service import DbApp
from tests.conftest import Upstream, backing_url
from tests.integration.conftest import runtime_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

RESPONSE = HttpResponse(
    status=200,
    headers=[("ETag", '"v1"'), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
    body=bytes(range(256)) * 4,
    url="http://upstream/x",
)


@pytest.fixture
def redis_url() -> str:
    return backing_url("PACA_TEST_REDIS_URL")


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []
    prefix = f"paca-test:cache:{uuid.uuid4().hex}:"

    def store(url: str = redis_url, **kwargs: object) -> RedisStore:
        kwargs.setdefault("prefix", prefix)
        made.append(RedisStore(url, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    try:
        yield store
    finally:
        for each in made:
            await each.aclose()


def test_an_entry_survives_encoding_with_deadlines_moved_to_the_readers_clock() -> None:
    entry = CacheEntry(RESPONSE, fresh_until=110.0, stale_until=150.0, vary=(("Accept", None),))
    data = encode(entry, mono_now=100.0, wall_now=5000.0)
    # Another process: its monotonic clock reads 7 when the wall clock reads 5002.
    read = decode(data, mono_now=7.0, wall_now=5002.0)
    assert read.response == RESPONSE
    assert read.fresh_until == pytest.approx(15.0)
    assert read.stale_until == pytest.approx(55.0)
    assert read.vary == (("Accept", None),)
    with pytest.raises(ValueError, match="not a cache entry"):
        decode(b"\x00\x00\x00\x05{}", 0, 0)


async def test_replicas_share_entries_bounded_by_ttl(
    redis_url: str, stores: Callable[..., RedisStore]
) -> None:
    one, two = stores(), stores()
    now = time.monotonic()
    await one.put("k", CacheEntry(RESPONSE, now + 30, now + 40), ttl_s=45)
    entry = await two.get("k")
    assert entry is not None
    assert entry.response == RESPONSE
    assert entry.fresh_until == pytest.approx(now + 30, abs=0.5)
    client = redis.Redis.from_url(redis_url)
    try:
        ttl_ms = await client.pttl(two.prefix + "k")
    finally:
        await client.aclose()
    assert 40_000 < ttl_ms <= 45_000
    assert await two.get("absent") is None
    assert (two.hits, two.misses, two.degraded) == (1, 1, False)


async def test_an_unreachable_redis_falls_back_to_memory_without_failing(
    stores: Callable[..., RedisStore],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = stores(f"redis://127.0.0.1:{port}/0", fallback=MemoryStore(1 << 20), timeout_s=0.2)
    now = time.monotonic()
    async with asyncio.timeout(2.0):
        await store.put("k", CacheEntry(RESPONSE, now + 30, now + 30), ttl_s=30)
        for _ in range(5):
            entry = await store.get("k")
            assert entry is not None
            assert entry.response == RESPONSE
    assert store.degraded
    assert store.fallbacks == 6
    assert store.errors == 3  # then Redis is left alone for a while


async def test_a_redis_that_does_not_answer_costs_each_call_one_short_timeout(
    stores: Callable[..., RedisStore],
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # holds the connection open and never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        store = stores(f"redis://127.0.0.1:{port}/0", timeout_s=0.05)
        started = time.monotonic()
        assert await store.get("k") is None  # no fallback: uncached, not failed
        assert time.monotonic() - started < 0.5
        assert store.errors == 1
        assert store.fallbacks == 1
    finally:
        for writer in accepted:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def replicas(
    db_app: DbApp, redis_url: str, tmp_path: Path
) -> AsyncIterator[list[api_service_pb2_grpc.ApiServiceStub]]:
    """Two api_service instances sharing one Redis cache (and one db_service)."""
    apps, channels = [], []
    for i in range(2):
        settings = ApiSettings(
            listen="127.0.0.1:0",
            db_address=db_app.server.bound_address,
            calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / f"spool{i}"),
            cache_redis_url=redis_url,
            cache_redis_timeout_s=0.5,
        )
        app = ApiApp(settings, runtime_settings(tmp_path / f"app{i}"))
        await app.start()
        apps.append(app)
        channels.append(grpc.aio.insecure_channel(app.server.bound_address))
    try:
        yield [api_service_pb2_grpc.ApiServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()
        for app in apps:
            await app.stop()


async def test_a_second_replica_revalidates_the_first_ones_entry(
    replicas: list[api_service_pb2_grpc.ApiServiceStub], upstream: Upstream
) -> None:
    one, two = replicas
    spec = api_types_pb2.Endpoint(
        name=f"etag.{uuid.uuid4().hex[:8]}", provider="etag", base_url=upstream.url, path="/etag"
    )
    spec.cache.enabled = True
    await one.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=spec))
    await two.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=spec))
    first = await one.Call(api_service_pb2.CallRequest(endpoint=spec.name))
    second = await two.Call(api_service_pb2.CallRequest(endpoint=spec.name))
    assert not first.from_cache
    assert second.from_cache  # the body came from the entry replica one stored
    assert second.body == first.body
    conditional = [h.get("If-None-Match") for h in upstream.seen_headers]
    assert conditional == [None, '"v1"']  # one full request, then a 304 revalidation


async def test_unreachable_redis_degrades_cache_and_shared_breakers_without_failing_calls(
    db_app: DbApp, upstream: Upstream, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address=db_app.server.bound_address,
        calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool"),
        cache_redis_url=dead,
        resilience=ResilienceSettings(redis_url=dead),
    )
    app = ApiApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            stub = api_service_pb2_grpc.ApiServiceStub(channel)
            spec = api_types_pb2.Endpoint(
                name="etag.dead-redis", provider="etag", base_url=upstream.url, path="/etag"
            )
            spec.cache.enabled = True
            spec.circuit_breaker.enabled = True
            spec.circuit_breaker.shared = True
            await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=spec))
            replies = [
                await stub.Call(api_service_pb2.CallRequest(endpoint=spec.name), timeout=5)
                for _ in range(5)
            ]
            stats = await stub.GetStats(api_service_pb2.GetStatsRequest())
    finally:
        await app.stop()
    assert [r.status_code for r in replies] == [200] * 5
    assert [r.from_cache for r in replies] == [False, True, True, True, True]  # memory served
    assert stats.cache_degraded
    assert stats.shared_breakers_degraded
