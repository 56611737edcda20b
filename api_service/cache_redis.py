"""A cache store in Redis, shared by every replica, that never fails or stalls a call.

Entries are stored under ``<prefix><key>`` with Redis's own expiry (the entry's useful life), so
Redis bounds them by TTL and its ``maxmemory`` policy bounds them in bytes. An entry's deadlines
are monotonic seconds of the process that made it; in Redis they travel as epoch seconds and are
turned back into this process's monotonic time on the way out, so a replica that reads another's
entry judges its freshness correctly (to the accuracy of the hosts' clocks).

Value layout: a 4-byte big-endian length, that many bytes of JSON metadata (status, headers, URL,
deadlines, Vary values), then the body as is: no base64 inflation of bodies. Not pickle: a
shared Redis must not be a way to run code in every replica.

Redis slow or down: each command has a short timeout; after ``FAILURES_TO_DEGRADE`` failures in a
row Redis is left alone for ``retry_s``. Meanwhile entries go to and come from the ``fallback``
store (this replica's memory, or nothing), calls go on, and ``degraded`` says so for stats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from api_service.cache import CacheEntry, CacheStore, MemoryStore, ResponseCache
from api_service.errors import CircuitOpen
from api_service.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from api_service.transport import HttpResponse

logger = logging.getLogger(__name__)
FAILURES_TO_DEGRADE = 3
_LENGTH = struct.Struct(">I")
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def encode(entry: CacheEntry, mono_now: float, wall_now: float) -> bytes:
    """``entry`` as bytes, its deadlines as epoch seconds."""
    response = entry.response
    meta = {
        "status": response.status,
        "headers": response.headers,
        "url": response.url,
        "fresh_until": wall_now + (entry.fresh_until - mono_now),
        "stale_until": wall_now + (entry.stale_until - mono_now),
        "vary": entry.vary,
    }
    header = json.dumps(meta, separators=(",", ":")).encode()
    return _LENGTH.pack(len(header)) + header + response.body


def decode(data: bytes, mono_now: float, wall_now: float) -> CacheEntry:
    """The entry of ``encode``, its deadlines in this process's monotonic time.

    Raises:
        ValueError: ``data`` is not an encoded entry.
    """
    try:
        (length,) = _LENGTH.unpack_from(data)
        meta = json.loads(data[_LENGTH.size : _LENGTH.size + length])
        response = HttpResponse(
            status=int(meta["status"]),
            headers=[(str(k), str(v)) for k, v in meta["headers"]],
            body=bytes(data[_LENGTH.size + length :]),
            url=str(meta["url"]),
        )
        return CacheEntry(
            response=response,
            fresh_until=mono_now + (float(meta["fresh_until"]) - wall_now),
            stale_until=mono_now + (float(meta["stale_until"]) - wall_now),
            vary=tuple((str(name), value) for name, value in meta["vary"]),
        )
    except (struct.error, KeyError, TypeError) as exc:
        raise ValueError(f"not a cache entry: {type(exc).__name__}") from None


class RedisStore:
    """Cache entries in Redis (see the module docstring); a ``CacheStore``.

    Lifecycle: use, then ``aclose()`` (idempotent; closes the fallback too).

    Args:
        url: Redis URL; never logged (it may hold a password).
        timeout_s: Longest a Redis command may take before the fallback answers.
        retry_s: After Redis failed, time before it is asked again.
        prefix: Key prefix; replicas sharing a cache use the same one.
        fallback: Store used while Redis is away (None: no caching meanwhile).
        max_entry_bytes: Larger entries are not stored in Redis.
        clock: Monotonic seconds (the cache's clock: entry deadlines are in it).
        wall_clock: Epoch seconds (deadlines as stored in Redis).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        prefix: str = "paca:cache:",
        fallback: CacheStore | None = None,
        max_entry_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.fallback = fallback
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._breaker = CircuitBreaker(
            "redis:cache",
            BreakerConfig(consecutive_failures=FAILURES_TO_DEGRADE, open_s=retry_s),
            clock=clock,
        )
        self.hits = 0
        self.misses = 0
        self.errors = 0
        # Operations the fallback (or nobody) served because Redis could not.
        self.fallbacks = 0
        self._closed = False

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "ok"
        return (
            f"<RedisStore {state} hits={self.hits} misses={self.misses} "
            f"errors={self.errors} fallbacks={self.fallbacks}>"
        )

    @property
    def degraded(self) -> bool:
        """True while Redis is left alone after failures (the fallback serves)."""
        return self._breaker.current_state() is not BreakerState.CLOSED

    async def get(self, key: str) -> CacheEntry | None:
        data = await self._command(lambda: self._redis.get(self.prefix + key))
        if data is _FAILED:
            self.fallbacks += 1
            return await self.fallback.get(key) if self.fallback is not None else None
        if not isinstance(data, bytes):
            self.misses += 1
            return None
        try:
            entry = decode(data, self._clock(), self._wall_clock())
        except ValueError:
            logger.warning("cache: unreadable entry in Redis ignored")
            return None
        self.hits += 1
        return entry

    async def put(self, key: str, entry: CacheEntry, ttl_s: float) -> None:
        if entry.size > self.max_entry_bytes:
            return
        data = encode(entry, self._clock(), self._wall_clock())
        ttl_ms = max(1, round(ttl_s * 1000))
        done = await self._command(lambda: self._redis.set(self.prefix + key, data, px=ttl_ms))
        if done is _FAILED:
            self.fallbacks += 1
            if self.fallback is not None:
                await self.fallback.put(key, entry, ttl_s)

    async def _command(self, run: Callable[[], Any]) -> object:
        """The command's result, or ``_FAILED`` when Redis is away, slow or failing."""
        try:
            ticket = self._breaker.acquire()
        except CircuitOpen:
            return _FAILED
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await run()
        except _REDIS_ERRORS as exc:
            self._breaker.record(ticket, failed=True)
            self.errors += 1
            if self._breaker.state is BreakerState.OPEN:
                logger.warning(
                    "cache: Redis unavailable, using the fallback: %s", type(exc).__name__
                )
            return _FAILED
        except BaseException:
            self._breaker.cancel(ticket)
            raise
        self._breaker.record(ticket, failed=False)
        return result

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._redis.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()


_FAILED = object()


def response_cache(
    max_bytes: int, redis_url: str = "", redis_timeout_s: float = 0.05
) -> ResponseCache | None:
    """The response cache settings describe: Redis shared by replicas (memory while Redis is
    away) when ``redis_url`` is set, else memory; None when both are off (``max_bytes`` 0 and
    no Redis)."""
    memory = MemoryStore(max_bytes) if max_bytes else None
    if redis_url:
        return ResponseCache(RedisStore(redis_url, timeout_s=redis_timeout_s, fallback=memory))
    return ResponseCache(memory) if memory is not None else None


def cache_degraded(cache: ResponseCache | None) -> bool:
    """Whether ``cache`` is a shared (Redis) cache that its fallback serves for now."""
    return cache is not None and isinstance(cache.store, RedisStore) and cache.store.degraded
