"""A pool of API keys of one provider: which key the next request uses, and which to rest.

Each key moves between these states (monotonic clock, injectable)::

    ACTIVE ──401/403──▶ QUARANTINED  for ``quarantine_s`` (0: until the pool is reloaded)
    ACTIVE ──429──────▶ COOLING      for its Retry-After (else the quota's reset, else cooldown_s)
    ACTIVE ──quota remaining ≤ reserve──▶ RESTED  until the quota's reset
    any state ──its time is up──▶ ACTIVE  (checked lazily on the next pick)

Quotas come from the provider's rate-limit headers (see :mod:`api_service.auth.quota`); between
answers the pool counts its own requests down, so concurrent calls do not all spend the last
request of a window. Picking is round-robin or least-used (fewest in flight, then fewest uses)
among the usable keys.

A key's secret never leaves through ``repr``, labels, health or errors: a key is known by its
label ``<pool>#<first 8 hex digits of the SHA-256 of the secret>``, stable across reloads,
restarts and replicas.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from api_service.auth.quota import parse_quota
from api_service.errors import ApiError, UpstreamError
from api_service.resilience.retry import parse_retry_after


class KeyState(enum.Enum):
    ACTIVE = "active"
    COOLING = "cooling"
    RESTED = "rested"
    QUARANTINED = "quarantined"


class Strategy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_USED = "least_used"


class NoUsableKey(UpstreamError):
    """Every key of the pool is cooling, rested or quarantined (RESOURCE_EXHAUSTED + RetryInfo).

    ``retry_after_s`` is the time until the first key is usable again (inf: none will be until
    the keys are reloaded).
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = False

    def __init__(self, pool: str, counts: dict[KeyState, int], retry_after_s: float) -> None:
        summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "no keys"
        super().__init__(f"no usable key in pool {pool}: {summary}")
        self.pool = pool
        self.retry_after_s = retry_after_s

    def details(self) -> Sequence[Message]:
        if not math.isfinite(self.retry_after_s):
            return ()
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(self.retry_after_s * 1000)))
        return (error_details_pb2.RetryInfo(retry_delay=delay),)


class UnknownKeyPool(ApiError):
    """An endpoint names a key pool this replica has no configuration for."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, pool: str) -> None:
        super().__init__(f"endpoint auth: no key pool named {pool!r} is configured")
        self.pool = pool


def key_label(pool: str, secret: str) -> str:
    """The non-secret, stable name of a key."""
    return f"{pool}#{hashlib.sha256(secret.encode()).hexdigest()[:8]}"


@dataclass(eq=False, slots=True)
class PooledKey:
    """One key and what the pool knows about it."""

    label: str
    secret: str = field(repr=False)
    state: KeyState = KeyState.ACTIVE
    # When a non-active state ends (monotonic; inf: at the next reload).
    until: float = 0.0
    uses: int = 0
    in_flight: int = 0
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None

    def __repr__(self) -> str:
        return f"<PooledKey {self.label} {self.state.value} uses={self.uses}>"


@dataclass(frozen=True, slots=True)
class KeyHealth:
    """A key's state for stats: no secret in it."""

    pool: str
    label: str
    state: KeyState
    uses: int
    quota_remaining: int | None
    available_in_s: float


class KeyPool:
    """The keys of one provider.

    Args:
        name: Pool name (used in labels and errors).
        secrets: The keys; duplicates are used once.
        quarantine_s: How long a key that got 401/403 is left alone (0: until ``reload``).
        cooldown_s: Rest after a 429 without Retry-After or quota reset.
        quota_reserve: Rest a key once its remaining quota is at most this (a margin for other
            clients of the same key, such as other replicas).
        clock: Monotonic seconds.
        wall_clock: Epoch seconds (for epoch quota resets).
    """

    def __init__(
        self,
        name: str,
        secrets: Sequence[str],
        *,
        quarantine_s: float = 300.0,
        cooldown_s: float = 1.0,
        quota_reserve: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.quarantine_s = quarantine_s
        self.cooldown_s = cooldown_s
        self.quota_reserve = quota_reserve
        self._clock = clock
        self._wall_clock = wall_clock
        self._keys: list[PooledKey] = []
        self._next = 0
        self.reload(secrets)

    def __repr__(self) -> str:
        counts = self._counts()
        states = " ".join(f"{s.value}={n}" for s, n in counts.items() if n)
        return f"<KeyPool {self.name} keys={len(self._keys)} {states}>"

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def secrets(self) -> list[str]:
        """Every secret of the pool (for scrubbing text), never to be logged."""
        return [k.secret for k in self._keys]

    def reload(self, secrets: Sequence[str]) -> None:
        """Replace the keys; a key kept keeps its counters but leaves quarantine."""
        old = {k.label: k for k in self._keys}
        keys: list[PooledKey] = []
        for secret in dict.fromkeys(s for s in secrets if s):
            label = key_label(self.name, secret)
            key = old.get(label) or PooledKey(label, secret)
            if key.state is KeyState.QUARANTINED:
                key.state, key.until = KeyState.ACTIVE, 0.0
            keys.append(key)
        self._keys = keys
        self._next = 0

    def acquire(self, strategy: Strategy = Strategy.ROUND_ROBIN) -> PooledKey:
        """The key for the next request; give it back with ``release``.

        Raises:
            NoUsableKey: No key is usable now.
        """
        now = self._clock()
        count = len(self._keys)
        chosen: PooledKey | None = None
        if strategy is Strategy.LEAST_USED:
            usable = [k for k in self._keys if self._usable(k, now)]
            if usable:
                chosen = min(usable, key=lambda k: (k.in_flight, k.uses))
        else:
            for step in range(count):
                index = (self._next + step) % count
                if self._usable(self._keys[index], now):
                    chosen = self._keys[index]
                    self._next = index + 1
                    break
        if chosen is None:
            waits = [k.until - now for k in self._keys if k.state is not KeyState.ACTIVE]
            raise NoUsableKey(self.name, self._counts(), max(0.0, min(waits, default=math.inf)))
        chosen.uses += 1
        chosen.in_flight += 1
        if chosen.remaining is not None:
            chosen.remaining = max(0, chosen.remaining - 1)
        return chosen

    def release(
        self, key: PooledKey, status: int | None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Report the answer the key got (``status`` None: no answer) and give it back."""
        key.in_flight = max(0, key.in_flight - 1)
        if status is None:
            return
        now = self._clock()
        quota = parse_quota(headers, self._wall_clock())
        if quota is not None:
            key.limit = quota.limit if quota.limit is not None else key.limit
            key.remaining = quota.remaining
            key.reset_at = now + quota.reset_s if quota.reset_s is not None else None
        if status in (401, 403):
            key.state = KeyState.QUARANTINED
            key.until = now + self.quarantine_s if self.quarantine_s > 0 else math.inf
        elif status == 429:
            wait = parse_retry_after(_header(headers, "retry-after"), now=self._wall_clock)
            if wait is None and quota is not None and quota.reset_s is not None:
                wait = quota.reset_s
            key.state = KeyState.COOLING
            key.until = now + (wait if wait is not None else self.cooldown_s)

    def health(self) -> list[KeyHealth]:
        now = self._clock()
        found = []
        for key in self._keys:
            self._usable(key, now)
            found.append(
                KeyHealth(
                    pool=self.name,
                    label=key.label,
                    state=key.state,
                    uses=key.uses,
                    quota_remaining=key.remaining,
                    available_in_s=max(0.0, key.until - now)
                    if key.state is not KeyState.ACTIVE
                    else 0.0,
                )
            )
        return found

    def _usable(self, key: PooledKey, now: float) -> bool:
        if key.state is not KeyState.ACTIVE:
            if now < key.until:
                return False
            if key.state is KeyState.RESTED:
                # The window the quota was counted in is over: unknown until the next answer.
                key.remaining = key.reset_at = None
            key.state, key.until = KeyState.ACTIVE, 0.0
        if key.reset_at is not None and now >= key.reset_at:
            key.remaining = key.reset_at = None
        if key.remaining is not None and key.remaining <= self.quota_reserve:
            key.state = KeyState.RESTED
            key.until = key.reset_at if key.reset_at is not None else now + self.cooldown_s
            return False
        return True

    def _counts(self) -> dict[KeyState, int]:
        counts = dict.fromkeys(KeyState, 0)
        for key in self._keys:
            counts[key.state] += 1
        return counts


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers if k.lower() == lowered), None)
