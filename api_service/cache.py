"""The response cache: HTTP caching rules (RFC 9111, RFC 5861) over a pluggable store.

An entry's lifetime, in monotonic seconds::

    stored ── fresh (served as is) ──▶ stale ── revalidated with If-None-Match /
                                          │      If-Modified-Since: 304 → fresh again
                                          └── upstream fails (no reply, 500/502/503/504) and
                                              the stale-if-error window is open → served stale

Freshness comes from the upstream (``s-maxage`` > ``max-age`` > ``Expires`` - ``Date``, less
``Age``) or, when it says nothing or the endpoint's policy overrides it, from the policy's TTL.
``no-store`` (request or response) keeps a response out; ``no-cache`` stores it stale, so every
use is revalidated; ``must-revalidate`` closes the stale-if-error window. ``private`` responses
are kept: the Authorization header is part of every key, so one caller's credentials never
answer another's request. A response ``Vary`` is checked against the request on lookup.

Concurrent identical misses are coalesced: the first caller's upstream request runs as a task
shielded from any one caller's cancellation, and every caller of the same key awaits it.

The freshness rules are hand-written: aiohttp-client-cache and CacheControl wrap a whole session
(or requests) and neither coalesces nor bounds memory in bytes; the rules fit in a page here.
The memory store is ``cachetools.LRUCache`` sized in bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar, cast

from cachetools import LRUCache
from paca.api.v1 import api_types_pb2

from api_service.transport import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Statuses a cache may store (RFC 9110 §15.1 "heuristically cacheable", plus 308).
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Upstream failures that let a stale entry answer instead (RFC 5861 §4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# Request headers that make the caller's own request conditional or uncached: passed through.
_BYPASS_HEADERS = frozenset({"if-none-match", "if-modified-since", "range"})
# Bookkeeping bytes per entry beyond headers and body.
_ENTRY_OVERHEAD = 256
# Cache keys by the text they digest, at most this many (emptied when full).
_MAX_DIGESTS = 4096
_DIGESTS: dict[str, str] = {}


def cache_control(value: str | None) -> dict[str, str]:
    """Directives of a Cache-Control header by lower-cased name (``max-age=60`` → "60")."""
    directives: dict[str, str] = {}
    for part in (value or "").split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            directives[name.lower()] = arg.strip().strip('"')
    return directives


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(int(value))) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a response may be served without asking the upstream, and past that on error."""

    storable: bool
    ttl_s: float
    stale_if_error_s: float


def freshness(
    response: HttpResponse, policy: api_types_pb2.CachePolicy, wall_now: float
) -> Freshness:
    """The freshness of ``response`` under ``policy``; ``wall_now`` (epoch s) dates Expires."""
    directives = cache_control(response.header("cache-control"))
    vary = response.header("vary") or ""
    if "no-store" in directives or response.status not in CACHEABLE_STATUSES or vary.strip() == "*":
        return Freshness(False, 0.0, 0.0)
    policy_ttl = policy.ttl.ToTimedelta().total_seconds()
    ttl: float | None
    if policy.override_upstream:
        ttl = policy_ttl
    elif "no-cache" in directives:
        ttl = 0.0
    else:
        ttl = _seconds(directives.get("s-maxage")) or _seconds(directives.get("max-age"))
        if ttl is None and "max-age" in directives:
            ttl = 0.0
        if ttl is None:
            ttl = _expires_in(response, wall_now)
        if ttl is None:
            ttl = policy_ttl
        ttl = max(0.0, ttl - (_seconds(response.header("age")) or 0.0))
    stale_s = policy.stale_if_error.ToTimedelta().total_seconds()
    stale_s = max(stale_s, _seconds(directives.get("stale-if-error")) or 0.0)
    if "must-revalidate" in directives or "proxy-revalidate" in directives:
        stale_s = 0.0
    has_validator = bool(response.header("etag") or response.header("last-modified"))
    return Freshness(ttl > 0 or stale_s > 0 or has_validator, ttl, stale_s)


def _expires_in(response: HttpResponse, wall_now: float) -> float | None:
    expires = response.header("expires")
    if expires is None:
        return None
    try:
        at = parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError):
        return 0.0  # an invalid Expires (often "0") means already expired
    date = response.header("date")
    try:
        now = parsedate_to_datetime(date).timestamp() if date else wall_now
    except (TypeError, ValueError):
        now = wall_now
    return max(0.0, at - now)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A stored response and its deadlines (monotonic seconds)."""

    response: HttpResponse
    fresh_until: float
    stale_until: float
    # (header name, request value) for each name of the response's Vary.
    vary: tuple[tuple[str, str | None], ...] = ()

    @property
    def size(self) -> int:
        headers = sum(len(k) + len(v) for k, v in self.response.headers)
        return len(self.response.body) + headers + len(self.response.url) + _ENTRY_OVERHEAD

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def usable_on_error(self, now: float) -> bool:
        return now < self.stale_until

    def conditional_headers(self) -> list[tuple[str, str]]:
        """Validators for a conditional request, or [] when the entry has none."""
        headers = []
        if etag := self.response.header("etag"):
            headers.append(("If-None-Match", etag))
        if modified := self.response.header("last-modified"):
            headers.append(("If-Modified-Since", modified))
        return headers

    def matches(self, request: HttpRequest) -> bool:
        return all(_header(request, name) == value for name, value in self.vary)


def _header(request: HttpRequest, name: str) -> str | None:
    lowered = name.lower()
    for key, value in request.headers:  # a loop, not next(genexpr): twice per cache hit
        if key.lower() == lowered:
            return value
    return None


class CacheStore(Protocol):
    """Where entries live; a store may drop any entry at any time."""

    async def get(self, key: str) -> CacheEntry | None: ...

    async def put(self, key: str, entry: CacheEntry, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """Entries in process memory, least recently used evicted first, bounded in bytes.

    Args:
        max_bytes: Bytes of bodies and headers held at most; a larger entry is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: LRUCache[str, CacheEntry] = LRUCache(max_bytes, getsizeof=_size)

    def __repr__(self) -> str:
        return (
            f"<MemoryStore entries={len(self._entries)} "
            f"bytes={self._entries.currsize}/{self.max_bytes}>"
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def current_bytes(self) -> float:
        return self._entries.currsize

    async def get(self, key: str) -> CacheEntry | None:
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> CacheEntry | None:
        """``get``, which never waits here: for callers that skip the await."""
        try:
            return self._entries[key]  # one lookup, where ``LRUCache.get`` makes two
        except KeyError:
            return None

    async def put(self, key: str, entry: CacheEntry, ttl_s: float) -> None:
        if entry.size > self.max_bytes:
            self._entries.pop(key, None)
            return
        self._entries[key] = entry

    async def aclose(self) -> None:
        self._entries.clear()


def _size(entry: CacheEntry) -> int:
    return entry.size


class ResponseCache:
    """Caching rules and request coalescing over a ``CacheStore``.

    Args:
        store: Where entries live.
        clock: Monotonic seconds (entry deadlines).
        wall_clock: Epoch seconds, only to date an ``Expires`` without a ``Date``.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._clock = clock
        self._wall_clock = wall_clock
        self._inflight: dict[str, asyncio.Future[object]] = {}
        # Callers waiting for another caller's upstream request.
        self.waiting = 0

    def __repr__(self) -> str:
        inflight = len(self._inflight)
        return f"<ResponseCache {self.store!r} in_flight={inflight} waiting={self.waiting}>"

    @staticmethod
    def applies(request: HttpRequest, policy: api_types_pb2.CachePolicy | None) -> bool:
        """Whether the cache takes part in ``request`` (a cached endpoint, GET/HEAD, no bypass)."""
        if policy is None or not policy.enabled or request.method not in {"GET", "HEAD"}:
            return False
        for name, value in request.headers:
            lowered = name.lower()
            if lowered in _BYPASS_HEADERS:
                return False
            if lowered == "cache-control" and "no-store" in cache_control(value):
                return False
        return True

    @staticmethod
    def key(request: HttpRequest, policy: api_types_pb2.CachePolicy) -> str:
        """A digest of method, URL, Authorization and the policy's vary headers.

        Hashed so that no credential in the URL or headers is ever a readable key. The digests
        of recent texts are remembered in process memory (a hit's key is a dict read, not a
        hash); only the digests reach a store.
        """
        text = f"{request.method}\0{request.url}\0{_header(request, 'authorization') or ''}\0"
        if policy.vary_headers:
            text += "".join(
                f"{name}={_header(request, name) or ''}\0"
                for name in sorted(h.lower() for h in policy.vary_headers)
            )
        digest = _DIGESTS.get(text)
        if digest is None:
            if len(_DIGESTS) >= _MAX_DIGESTS:
                _DIGESTS.clear()
            digest = _DIGESTS[text] = hashlib.sha256(text.encode()).hexdigest()
        return digest

    def now(self) -> float:
        return self._clock()

    @property
    def in_memory(self) -> MemoryStore | None:
        """The store when it is in process memory (``lookup_nowait`` may be used), else None."""
        store = self.store
        return store if type(store) is MemoryStore else None

    async def lookup(self, key: str, request: HttpRequest) -> CacheEntry | None:
        """The stored entry for ``key`` if it fits the request's Vary (fresh or not)."""
        return self._fitting(await self.store.get(key), request)

    def lookup_nowait(
        self, store: MemoryStore, key: str, request: HttpRequest
    ) -> CacheEntry | None:
        """``lookup`` in ``store``, the ``in_memory`` store: no await, whose two coroutines
        would be a tenth of a cache hit's cost."""
        return self._fitting(store.get_nowait(key), request)

    @staticmethod
    def _fitting(entry: CacheEntry | None, request: HttpRequest) -> CacheEntry | None:
        if entry is None or (entry.vary and not entry.matches(request)):
            return None
        directives = _header(request, "cache-control")
        if directives and "no-cache" in cache_control(directives):
            return dataclasses.replace(entry, fresh_until=0.0)
        return entry

    async def store_response(
        self,
        key: str,
        request: HttpRequest,
        response: HttpResponse,
        policy: api_types_pb2.CachePolicy,
    ) -> CacheEntry | None:
        """Store ``response`` if the rules allow; returns the entry stored."""
        rules = freshness(response, policy, self._wall_clock())
        if not rules.storable:
            return None
        now = self._clock()
        vary_names = [v.strip() for v in (response.header("vary") or "").split(",") if v.strip()]
        entry = CacheEntry(
            response=response,
            fresh_until=now + rules.ttl_s,
            stale_until=now + rules.ttl_s + rules.stale_if_error_s,
            vary=tuple((name, _header(request, name)) for name in vary_names),
        )
        # The store may expire it once neither fresh nor usable on error; validators keep an
        # entry useful after that, so stores that honour a TTL get a generous one.
        keep_s = max(rules.ttl_s + rules.stale_if_error_s, 3600.0)
        await self.store.put(key, entry, keep_s)
        return entry

    async def revalidated(
        self,
        key: str,
        request: HttpRequest,
        entry: CacheEntry,
        not_modified: HttpResponse,
        policy: api_types_pb2.CachePolicy,
    ) -> HttpResponse:
        """The stored response updated by a 304's headers (RFC 9111 §4.3.4), stored again."""
        updated = {k.lower() for k, _ in not_modified.headers} - {"content-length"}
        headers = [(k, v) for k, v in entry.response.headers if k.lower() not in updated]
        headers += [(k, v) for k, v in not_modified.headers if k.lower() in updated]
        response = entry.response._replace(headers=headers)
        await self.store_response(key, request, response, policy)
        return response

    async def coalesce(self, key: str, fetch: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``fetch`` once per key at a time; returns its result and whether it was shared.

        The fetch runs as its own task: a caller that gives up (cancelled, deadline) leaves it
        running for the others, and its result still reaches the store.
        """
        task = self._inflight.get(key)
        if task is not None:
            self.waiting += 1
            try:
                return await asyncio.shield(cast("asyncio.Future[T]", task)), True
            finally:
                self.waiting -= 1
        created = asyncio.ensure_future(fetch())
        self._inflight[key] = cast("asyncio.Future[object]", created)
        created.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(created), False

    def _finished(self, key: str, task: asyncio.Future[T]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so that a fetch whose callers all left is not reported as lost.
            logger.debug("coalesced upstream request failed: %s", type(task.exception()).__name__)

    async def aclose(self) -> None:
        """Cancel fetches no caller waits for any more and empty the store (idempotent)."""
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()
        await self.store.aclose()
