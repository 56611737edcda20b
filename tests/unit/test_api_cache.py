"""Caching rules and the byte-bounded store, with a clock the tests move."""

from __future__ import annotations

import pytest
from paca.api.v1 import api_types_pb2

from api_service.cache import CacheEntry, MemoryStore, ResponseCache
from api_service.transport import HttpRequest, HttpResponse

pytestmark = pytest.mark.unit

GET = HttpRequest("GET", "https://api.example.com/x?api_key=s3cr3t", [], None, 5.0)
WALL = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reply(*headers: tuple[str, str], status: int = 200, body: bytes = b"{}") -> HttpResponse:
    return HttpResponse(status, list(headers), body, GET.url)


def policy(ttl_s: int = 0, stale_s: int = 0, override: bool = False) -> api_types_pb2.CachePolicy:
    p = api_types_pb2.CachePolicy(enabled=True, override_upstream=override)
    p.ttl.FromSeconds(ttl_s)
    p.stale_if_error.FromSeconds(stale_s)
    return p


async def stored(response: HttpResponse, cache_policy: api_types_pb2.CachePolicy) -> CacheEntry:
    clock = Clock()
    cache = ResponseCache(MemoryStore(1 << 20), clock=clock, wall_clock=lambda: WALL)
    entry = await cache.store_response("k", GET, response, cache_policy)
    assert entry is not None
    entry = await cache.lookup("k", GET)
    assert entry is not None
    return CacheEntry(entry.response, entry.fresh_until - 100, entry.stale_until - 100, entry.vary)


@pytest.mark.parametrize(
    ("headers", "cache_policy", "fresh_s"),
    [
        ((("Cache-Control", "max-age=60"),), policy(ttl_s=5), 60),
        ((("Cache-Control", "max-age=60, s-maxage=30"),), policy(), 30),
        ((("Cache-Control", "max-age=60"), ("Age", "20")), policy(), 40),
        (
            (
                ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"),
                ("Expires", "Tue, 14 Nov 2023 22:15:20 GMT"),
            ),
            policy(),
            120,
        ),
        ((("ETag", '"a"'),), policy(ttl_s=5), 5),
        ((("Cache-Control", "max-age=60"),), policy(ttl_s=5, override=True), 5),
        ((("Cache-Control", "no-cache"), ("ETag", '"a"')), policy(ttl_s=5), 0),
    ],
)
async def test_freshness_follows_s_maxage_max_age_expires_age_then_policy_ttl(
    headers: tuple[tuple[str, str], ...], cache_policy: api_types_pb2.CachePolicy, fresh_s: float
) -> None:
    entry = await stored(reply(*headers), cache_policy)
    assert entry.fresh_until == pytest.approx(fresh_s)


async def test_stale_if_error_window_is_policy_or_upstream_unless_must_revalidate() -> None:
    entry = await stored(reply(("Cache-Control", "max-age=10, stale-if-error=100")), policy(0, 50))
    assert (entry.fresh_until, entry.stale_until) == (10, 110)
    entry = await stored(reply(("Cache-Control", "max-age=10, must-revalidate")), policy(0, 50))
    assert entry.stale_until == 10


@pytest.mark.parametrize(
    "response",
    [
        reply(("Cache-Control", "no-store, max-age=60")),
        reply(("Cache-Control", "max-age=60"), status=500),
        reply(("Cache-Control", "max-age=60"), ("Vary", "*")),
        reply(),  # nothing to say it may be reused and no policy TTL
    ],
)
async def test_responses_that_may_not_be_reused_are_not_stored(response: HttpResponse) -> None:
    cache = ResponseCache(MemoryStore(1 << 20))
    assert await cache.store_response("k", GET, response, policy()) is None
    assert await cache.lookup("k", GET) is None


async def test_entry_turns_stale_when_the_clock_passes_its_max_age() -> None:
    clock = Clock()
    cache = ResponseCache(MemoryStore(1 << 20), clock=clock)
    await cache.store_response("k", GET, reply(("Cache-Control", "max-age=60")), policy())
    entry = await cache.lookup("k", GET)
    assert entry is not None
    assert entry.is_fresh(clock())
    clock.now += 60
    assert not entry.is_fresh(clock())


async def test_memory_store_evicts_least_recently_used_to_stay_within_its_bytes() -> None:
    store = MemoryStore(max_bytes=3000)
    body = b"x" * 700
    for key in "abc":
        entry = CacheEntry(reply(body=body), 1.0, 1.0)
        await store.put(key, entry, 60)
    assert await store.get("a") is not None  # a is now the most recently used
    await store.put("d", CacheEntry(reply(body=body), 1.0, 1.0), 60)
    assert await store.get("b") is None
    assert {k for k in "acd" if await store.get(k) is not None} == set("acd")
    assert store.current_bytes <= 3000
    await store.put("huge", CacheEntry(reply(body=b"x" * 4000), 1.0, 1.0), 60)
    assert await store.get("huge") is None


def test_key_includes_authorization_and_vary_headers_and_reveals_no_secret() -> None:
    cache_policy = api_types_pb2.CachePolicy(enabled=True, vary_headers=["Accept"])
    base = ResponseCache.key(GET, cache_policy)
    other_user = HttpRequest("GET", GET.url, [("Authorization", "Bearer t2")], None, 5.0)
    other_accept = HttpRequest("GET", GET.url, [("accept", "text/csv")], None, 5.0)
    keys = {base, ResponseCache.key(other_user, cache_policy)}
    keys.add(ResponseCache.key(other_accept, cache_policy))
    assert len(keys) == 3
    assert all("s3cr3t" not in k and "t2" not in k for k in keys)


def test_cache_takes_part_only_in_plain_gets_of_cached_endpoints() -> None:
    on = api_types_pb2.CachePolicy(enabled=True)
    assert ResponseCache.applies(GET, on)
    assert not ResponseCache.applies(GET, api_types_pb2.CachePolicy())
    assert not ResponseCache.applies(HttpRequest("POST", GET.url, [], b"", 5.0), on)
    conditional = HttpRequest("GET", GET.url, [("If-None-Match", '"a"')], None, 5.0)
    assert not ResponseCache.applies(conditional, on)
