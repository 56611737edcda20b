"""The live policy objects of the call engine, built from endpoint policies and settings.

One breaker per endpoint (when its policy enables one) and one per upstream host (from
settings), one token bucket per rate-limited endpoint, one bulkhead and one retry budget per
upstream host. Objects are built on first use and rebuilt when an endpoint is re-registered with
a different policy, so a registry change takes effect on the next call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from google.protobuf import duration_pb2
from opentelemetry import trace
from paca.api.v1 import api_types_pb2

from api_service.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from api_service.resilience.bulkhead import Bulkhead
from api_service.resilience.global_limit import GlobalRateLimiter
from api_service.resilience.ratelimit import TokenBucket
from api_service.resilience.retry import RetryBudget, RetryStrategy
from api_service.resilience.shared_breaker import SharedBreakers
from api_service.settings import ResilienceSettings


def _seconds(duration: duration_pb2.Duration, default: float) -> float:
    value = duration.ToTimedelta().total_seconds()
    return value if value > 0 else default


def breaker_config(policy: api_types_pb2.CircuitBreakerPolicy) -> BreakerConfig:
    """An enabled endpoint policy as a config; unset fields take sensible defaults."""
    consecutive = policy.consecutive_failures
    if not consecutive and not policy.failure_rate_threshold:
        consecutive = 5
    return BreakerConfig(
        consecutive_failures=consecutive,
        failure_rate=policy.failure_rate_threshold,
        window_s=_seconds(policy.window, 10.0),
        minimum_calls=policy.minimum_calls or 20,
        open_s=_seconds(policy.open_duration, 5.0),
        half_open_probes=policy.half_open_probes or 1,
    )


def _on_transition(name: str, old: BreakerState, new: BreakerState) -> None:
    # The call that caused the change carries it in its trace.
    trace.get_current_span().add_event(
        "circuit.transition",
        {"paca.circuit": name, "paca.circuit.from": old.value, "paca.circuit.to": new.value},
    )


class Guards:
    """Breakers, buckets, bulkheads and budgets by endpoint and host.

    Lifecycle: use, then ``aclose()`` (idempotent) to close the Redis client of global limits.

    Args:
        settings: Service-wide defaults.
        clock: Monotonic seconds for breakers and buckets.
        random: Uniform [0, 1) source for backoff jitter.
    """

    def __init__(
        self,
        settings: ResilienceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.default_retry = RetryStrategy(
            max_attempts=settings.retry_max_attempts,
            initial_backoff_s=settings.retry_initial_backoff_s,
            max_backoff_s=settings.retry_max_backoff_s,
            max_retry_after_s=settings.retry_max_retry_after_s,
            random=random,
        )
        self._host_breaker_config = (
            BreakerConfig(
                consecutive_failures=0,
                failure_rate=settings.host_breaker_failure_rate,
                window_s=settings.host_breaker_window_s,
                minimum_calls=settings.host_breaker_min_calls,
                open_s=settings.host_breaker_open_s,
            )
            if settings.host_breaker_failure_rate > 0
            else None
        )
        self._retries: dict[str, tuple[bytes, RetryStrategy]] = {}
        self._endpoint_breakers: dict[str, tuple[bytes, CircuitBreaker]] = {}
        self._host_breakers: dict[str, CircuitBreaker] = {}
        self._buckets: dict[str, tuple[bytes, TokenBucket]] = {}
        self._bulkheads: dict[str, Bulkhead] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self.global_limiter = (
            GlobalRateLimiter(settings.redis_url, timeout_s=settings.redis_timeout_s, clock=clock)
            if settings.redis_url
            else None
        )
        # Breakers whose policy (or host_breaker_shared) says so share trips through Redis.
        self.shared_breakers = (
            SharedBreakers(settings.redis_url, timeout_s=settings.redis_timeout_s, clock=clock)
            if settings.redis_url
            else None
        )

    def __repr__(self) -> str:
        return (
            f"<Guards endpoint_breakers={len(self._endpoint_breakers)} "
            f"host_breakers={len(self._host_breakers)} buckets={len(self._buckets)} "
            f"bulkheads={len(self._bulkheads)}>"
        )

    def retry_strategy(self, endpoint: api_types_pb2.Endpoint | None) -> RetryStrategy:
        if endpoint is None or not endpoint.HasField("retry"):
            return self.default_retry
        key = endpoint.retry.SerializeToString(deterministic=True)
        cached = self._retries.get(endpoint.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        policy = endpoint.retry
        strategy = RetryStrategy.from_policy(
            self.default_retry,
            max_attempts=policy.max_attempts,
            initial_backoff_s=_seconds(policy.initial_backoff, 0.0),
            max_backoff_s=_seconds(policy.max_backoff, 0.0),
            multiplier=policy.backoff_multiplier,
            retryable_statuses=policy.retryable_status_codes,
        )
        self._retries[endpoint.name] = (key, strategy)
        return strategy

    def breakers(self, endpoint: api_types_pb2.Endpoint | None, host: str) -> list[CircuitBreaker]:
        """The breakers a call must pass: its endpoint's (if enabled), then its host's."""
        found = []
        if endpoint is not None and endpoint.circuit_breaker.enabled:
            key = endpoint.circuit_breaker.SerializeToString(deterministic=True)
            cached = self._endpoint_breakers.get(endpoint.name)
            if cached is None or cached[0] != key:
                breaker = self._breaker(
                    f"endpoint:{endpoint.name}",
                    breaker_config(endpoint.circuit_breaker),
                    shared=endpoint.circuit_breaker.shared,
                )
                cached = self._endpoint_breakers[endpoint.name] = (key, breaker)
            found.append(cached[1])
        if self._host_breaker_config is not None:
            host_breaker = self._host_breakers.get(host)
            if host_breaker is None:
                host_breaker = self._host_breakers[host] = self._breaker(
                    f"host:{host}",
                    self._host_breaker_config,
                    shared=self.settings.host_breaker_shared,
                )
            found.append(host_breaker)
        return found

    def _breaker(self, name: str, config: BreakerConfig, *, shared: bool) -> CircuitBreaker:
        if shared and self.shared_breakers is not None:
            return self.shared_breakers.breaker(name, config, _on_transition)
        return CircuitBreaker(name, config, clock=self._clock, on_transition=_on_transition)

    def bucket(self, endpoint: api_types_pb2.Endpoint | None) -> TokenBucket | None:
        if endpoint is None or endpoint.rate_limit.requests_per_second <= 0:
            return None
        policy = endpoint.rate_limit
        key = f"{policy.requests_per_second}/{policy.burst}".encode()
        cached = self._buckets.get(endpoint.name)
        if cached is None or cached[0] != key:
            bucket = TokenBucket(policy.requests_per_second, policy.burst or 1, clock=self._clock)
            cached = self._buckets[endpoint.name] = (key, bucket)
        return cached[1]

    def global_bucket(self, endpoint: api_types_pb2.Endpoint | None) -> GlobalRateLimiter | None:
        """The shared limiter when the endpoint's limit is GLOBAL and Redis is configured."""
        if (
            endpoint is None
            or endpoint.rate_limit.requests_per_second <= 0
            or endpoint.rate_limit.scope != api_types_pb2.RATE_LIMIT_SCOPE_GLOBAL
        ):
            return None
        return self.global_limiter

    def bulkhead(self, endpoint: api_types_pb2.Endpoint | None, host: str) -> Bulkhead | None:
        """The host's concurrency limit, as the calling endpoint sets it (0: none)."""
        limit = endpoint.rate_limit.max_concurrency if endpoint is not None else 0
        if limit <= 0:
            return None
        bulkhead = self._bulkheads.get(host)
        if bulkhead is None:
            bulkhead = self._bulkheads[host] = Bulkhead(f"host:{host}", limit)
        bulkhead.limit = limit
        return bulkhead

    def budget(self, host: str) -> RetryBudget:
        budget = self._budgets.get(host)
        if budget is None:
            budget = self._budgets[host] = RetryBudget(
                self.settings.retry_budget, self.settings.retry_min_concurrency
            )
        return budget

    def endpoint_breaker(self, name: str) -> CircuitBreaker | None:
        cached = self._endpoint_breakers.get(name)
        return cached[1] if cached is not None else None

    def host_breaker(self, host: str) -> CircuitBreaker | None:
        return self._host_breakers.get(host)

    def breakers_by_name(self) -> dict[str, CircuitBreaker]:
        """Every breaker built so far, by name (``endpoint:...``, ``host:...``)."""
        found = {b.name: b for _, b in self._endpoint_breakers.values()}
        found.update((b.name, b) for b in self._host_breakers.values())
        return found

    def forget(self, endpoint: str) -> None:
        """Drop an endpoint's objects (it was removed)."""
        for table in (self._retries, self._endpoint_breakers, self._buckets):
            table.pop(endpoint, None)
        if self.shared_breakers is not None:
            self.shared_breakers.forget(f"endpoint:{endpoint}")

    async def open(self) -> None:
        """Warm up what needs a connection (the Redis of global limits)."""
        if self.global_limiter is not None:
            await self.global_limiter.open()

    async def aclose(self) -> None:
        if self.global_limiter is not None:
            await self.global_limiter.aclose()
        if self.shared_breakers is not None:
            await self.shared_breakers.aclose()
