"""Per-target call statistics for ``GetStats`` and the monitor report.

A target is a registered endpoint, or the upstream host of a call to an absolute URL. Latency
percentiles come from the most recent ``LATENCY_SAMPLES`` calls of each target: a bounded ring,
so memory stays flat however long the process runs and the figures follow the current behaviour.
Hand-written: an HDR histogram library would add a dependency to sort a thousand floats on demand.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from google.protobuf import duration_pb2
from paca.api.v1 import api_types_pb2

LATENCY_SAMPLES = 1024


@dataclass(slots=True)
class TargetStats:
    """Counters of one target; mutated by the call engine only."""

    endpoint: str
    host: str
    calls: int = 0
    successes: int = 0
    attempts: int = 0
    retries_denied: int = 0
    limiter_waits: int = 0
    limiter_wait_s: float = 0.0
    limiter_rejections: int = 0
    # Decisions of a global (Redis) limit taken by the local bucket because Redis could not say.
    limiter_degraded: int = 0
    breaker_rejections: int = 0
    # Calls answered from the cache (fresh, revalidated, stale on error, coalesced) and those
    # of a cached endpoint that needed an upstream body.
    cache_hits: int = 0
    cache_misses: int = 0
    # Replies whose body did not fit the endpoint's JSON Schema.
    validation_errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def record_call(self, *, success: bool, attempts: int, latency_ms: float) -> None:
        self.calls += 1
        self.successes += success
        self.attempts += attempts
        self.latencies_ms.append(latency_ms)

    @property
    def cache_hit_ratio(self) -> float:
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / self.calls if self.calls else 0.0

    def percentiles_ms(self, *quantiles: float) -> list[float]:
        """Nearest-rank percentiles of the recent latencies (0.0 when there are none)."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return [0.0 for _ in quantiles]
        return [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in quantiles]


class CallStats:
    """Statistics by target."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, str], TargetStats] = {}

    def __repr__(self) -> str:
        return f"<CallStats targets={len(self._targets)}>"

    def target(self, endpoint: str, host: str = "") -> TargetStats:
        """The stats of an endpoint (``endpoint`` set) or of URL calls to ``host``.

        An endpoint's stats remember the host it was last called on (``host`` non-empty).
        """
        key = (endpoint, "" if endpoint else host)
        stats = self._targets.get(key)
        if stats is None:
            stats = self._targets[key] = TargetStats(endpoint, host)
        elif host:
            stats.host = host
        return stats

    def targets(self) -> list[TargetStats]:
        return [self._targets[key] for key in sorted(self._targets)]


def _duration_ms(ms: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(round(ms * 1000))
    return duration


def to_message(
    stats: TargetStats,
    *,
    endpoint_circuit: api_types_pb2.CircuitState.ValueType,
    host_circuit: api_types_pb2.CircuitState.ValueType,
) -> api_types_pb2.CallStats:
    """The ``CallStats`` message of one target, with its breakers' states as of now."""
    p50, p95, p99 = stats.percentiles_ms(0.50, 0.95, 0.99)
    return api_types_pb2.CallStats(
        endpoint=stats.endpoint,
        host=stats.host,
        calls=stats.calls,
        success_rate=stats.success_rate,
        latency_p50=_duration_ms(p50),
        latency_p95=_duration_ms(p95),
        latency_p99=_duration_ms(p99),
        attempts=stats.attempts,
        retries_denied=stats.retries_denied,
        endpoint_circuit=endpoint_circuit,
        host_circuit=host_circuit,
        circuit_rejections=stats.breaker_rejections,
        limiter_waits=stats.limiter_waits,
        limiter_wait=_duration_ms(stats.limiter_wait_s * 1000),
        limiter_rejections=stats.limiter_rejections,
        limiter_degraded=stats.limiter_degraded,
        cache_hits=stats.cache_hits,
        cache_misses=stats.cache_misses,
        cache_hit_ratio=stats.cache_hit_ratio,
        validation_errors=stats.validation_errors,
    )
