"""The outbound call engine: resolve the target, build the request, send it, record it.

For an endpoint whose cache policy is on (GET/HEAD), the cache comes first (see
``api_service.cache``): a fresh entry answers without an upstream request; otherwise one
upstream request per cache key runs at a time (stale entries revalidated, served stale when the
upstream fails) and concurrent identical calls share its answer. Then one call runs this loop
until it has an answer worth returning::

    rate limit (token bucket: wait or RESOURCE_EXHAUSTED) → bulkhead slot for the host →
    breakers (endpoint, host: UNAVAILABLE + RetryInfo when open) → HTTP attempt →
    outcome to the breakers → retry strategy and budget decide → jittered wait → again

The caller's gRPC deadline caps everything: each attempt's timeout is cut to the time left, and
a wait that would not leave time for another attempt is not started; the call then ends at once
with its last outcome (an upstream reply of any status is returned as such; no reply is the
last error). A guard that refuses a retry also ends the call with the last outcome; only when
the first attempt is refused does the caller see the guard's error.

Every call that reaches the upstream, or is refused by a guard, leaves one ``ApiCallRecord``
(with its attempt count) in the call log; a request refused as bad input never reaches the
upstream and is not recorded, and neither is a call answered by the cache alone (GetStats
counts it as a cache hit). Each HTTP attempt is a client span under ``api.call`` carrying
``http.request.resend_count``; each wait is a ``retry`` event on ``api.call``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.protobuf import duration_pb2, timestamp_pb2
from opentelemetry import trace
from paca.api.v1 import api_service_pb2, api_types_pb2
from paca.db.v1 import db_types_pb2

from api_service.cache import ERROR_STATUSES, CacheEntry, ResponseCache
from api_service.calllog import CallRecorder
from api_service.errors import CircuitOpen, RateLimited, UpstreamError, UpstreamTimeout
from api_service.registry import APIRegistry
from api_service.request import Target, build, resolve
from api_service.resilience import Guards, is_safe_to_repeat, parse_retry_after
from api_service.resilience.breaker import CircuitBreaker, Ticket
from api_service.settings import ResilienceSettings
from api_service.stats import CallStats, TargetStats
from api_service.transport import ATTEMPT, HttpRequest, HttpResponse, HttpTransport
from paca_runtime.redact import redact_url

tracer = trace.get_tracer(__name__)
# Time an attempt needs at least; guards do not wait into it.
MIN_ATTEMPT_S = 0.01


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's resolved target, request, host, deadline and stats."""

    target: Target
    request: HttpRequest
    host: str
    deadline: float | None
    stats: TargetStats


@dataclass(slots=True)
class _Outcome:
    """Where a call ended: a reply or an error, after ``attempts`` HTTP attempts."""

    response: HttpResponse | None = None
    error: UpstreamError | RateLimited | None = None
    attempts: int = 0


class OutboundCaller:
    """Makes ``CallRequest``s against registered endpoints or absolute URLs.

    Args:
        registry: Registered endpoints.
        transport: The shared HTTP transport (opened by the owner).
        recorder: Where call records go.
        default_timeout_s: Per-attempt limit when neither call nor endpoint sets one.
        max_data_bytes: Larger JSON responses are not copied into the record.
        guards: Breakers, limiters and retry budgets (default: built from default settings).
        clock: Monotonic seconds, for deadlines.
        sleep: Waits between attempts and for rate-limit reservations.
        cache: Response cache of endpoints whose policy enables it (None: no caching).
    """

    def __init__(
        self,
        registry: APIRegistry,
        transport: HttpTransport,
        recorder: CallRecorder,
        *,
        default_timeout_s: float,
        max_data_bytes: int,
        guards: Guards | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cache: ResponseCache | None = None,
    ) -> None:
        self.registry = registry
        self.transport = transport
        self.recorder = recorder
        self.default_timeout_s = default_timeout_s
        self.max_data_bytes = max_data_bytes
        self.guards = guards or Guards(ResilienceSettings())
        self.cache = cache
        self.stats = CallStats()
        self._clock = clock
        self._sleep = sleep
        self.calls = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<OutboundCaller calls={self.calls} failures={self.failures} {self.guards!r}>"

    async def call(
        self, request: api_service_pb2.CallRequest, *, time_remaining_s: float | None = None
    ) -> api_service_pb2.CallResponse:
        """Make one call; ``time_remaining_s`` is what is left of the caller's deadline.

        Raises:
            InvalidCall / UnknownEndpoint: Bad input; nothing was sent or recorded.
            ForbiddenTarget: The URL's literal IP is not allowed (not recorded); a name that
                resolves only to such addresses fails the same way (recorded).
            RateLimited: Over the endpoint's rate or the host's concurrency limit (recorded).
            CircuitOpen: A breaker refused the call (recorded).
            UpstreamError: No usable response (recorded as a failure).
        """
        target = resolve(self.registry, request)
        http_request = build(request, target, self.default_timeout_s, time_remaining_s)
        self.transport.network_policy.check_url(http_request.url)
        deadline = None if time_remaining_s is None else self._clock() + time_remaining_s
        # host:port without any userinfo: it names breakers, stats and metrics.
        host = urlsplit(http_request.url).netloc.rpartition("@")[2]
        stats = self.stats.target(target.endpoint, host)
        policy = target.spec.cache if target.spec is not None else None
        call = _Call(target, http_request, host, deadline, stats)
        with tracer.start_as_current_span(
            "api.call",
            attributes={
                "paca.provider": target.provider,
                "paca.endpoint": target.endpoint,
                "http.request.method": target.method,
            },
        ) as span:
            started = time.perf_counter()
            safe = is_safe_to_repeat(target.method, request.idempotency_key)
            if (
                self.cache is not None
                and policy is not None
                and self.cache.applies(http_request, policy)
            ):
                response, attempts, from_cache = await self._through_cache(call, policy, safe, span)
            else:
                response, attempts = self._answer(await self._upstream(call, safe, span))
                from_cache = False
            elapsed_ms = (time.perf_counter() - started) * 1000
        latency = duration_pb2.Duration()
        latency.FromMicroseconds(int(elapsed_ms * 1000))
        return api_service_pb2.CallResponse(
            status_code=response.status,
            headers=[api_types_pb2.Header(name=k, value=v) for k, v in response.headers],
            body=response.body,
            latency=latency,
            attempts=attempts,
            from_cache=from_cache,
            url=redact_url(response.url),
        )

    def _answer(self, outcome: _Outcome) -> tuple[HttpResponse, int]:
        if outcome.response is None:
            assert outcome.error is not None
            raise outcome.error
        return outcome.response, outcome.attempts

    async def _upstream(self, call: _Call, safe: bool, span: trace.Span) -> _Outcome:
        """The upstream exchange with its guards and retries, recorded and counted."""
        started_wall = timestamp_pb2.Timestamp()
        started_wall.GetCurrentTime()
        started = time.perf_counter()
        self.calls += 1
        outcome = await self._attempts(
            call.target, call.request, call.host, call.deadline, safe, call.stats, span
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        span.set_attribute("paca.attempts", outcome.attempts)
        success = self._record(call.target, call.request, started_wall, elapsed_ms, outcome)
        call.stats.record_call(success=success, attempts=outcome.attempts, latency_ms=elapsed_ms)
        if outcome.response is None:
            self.failures += 1
        return outcome

    async def _through_cache(
        self, call: _Call, policy: api_types_pb2.CachePolicy, safe: bool, span: trace.Span
    ) -> tuple[HttpResponse, int, bool]:
        """Answer from the cache, or make (or join) the one upstream request for this key."""
        cache = self.cache
        assert cache is not None
        key = cache.key(call.request, policy)
        entry = await cache.lookup(key, call.request)
        if entry is not None and entry.is_fresh(cache.now()):
            call.stats.cache_hits += 1
            span.set_attribute("paca.cache", "hit")
            return entry.response, 0, True
        (response, attempts, from_cache), shared = await cache.coalesce(
            key, lambda: self._fill(key, entry, call, policy, safe, span)
        )
        if shared:
            call.stats.cache_hits += 1
            span.set_attribute("paca.cache", "coalesced")
            return response, 0, True
        if from_cache:
            call.stats.cache_hits += 1
        else:
            call.stats.cache_misses += 1
        return response, attempts, from_cache

    async def _fill(
        self,
        key: str,
        entry: CacheEntry | None,
        call: _Call,
        policy: api_types_pb2.CachePolicy,
        safe: bool,
        span: trace.Span,
    ) -> tuple[HttpResponse, int, bool]:
        """One upstream request for a cache key: revalidate, refresh or fall back to stale."""
        cache = self.cache
        assert cache is not None
        validators = entry.conditional_headers() if entry is not None else []
        sent = call
        if validators:
            request = dataclasses.replace(call.request, headers=call.request.headers + validators)
            sent = dataclasses.replace(call, request=request)
        outcome = await self._upstream(sent, safe, span)
        response = outcome.response
        failed = response is None or response.status in ERROR_STATUSES
        if failed and entry is not None and entry.usable_on_error(cache.now()):
            span.set_attribute("paca.cache", "stale")
            return entry.response, outcome.attempts, True
        response, attempts = self._answer(outcome)
        if response.status == 304 and entry is not None and validators:
            span.set_attribute("paca.cache", "revalidated")
            fresh = await cache.revalidated(key, call.request, entry, response, policy)
            return fresh, attempts, True
        span.set_attribute("paca.cache", "miss")
        await cache.store_response(key, call.request, response, policy)
        return response, attempts, False

    async def _attempts(
        self,
        target: Target,
        request: HttpRequest,
        host: str,
        deadline: float | None,
        safe: bool,
        stats: TargetStats,
        span: trace.Span,
    ) -> _Outcome:
        strategy = self.guards.retry_strategy(target.spec)
        budget = self.guards.budget(host)
        outcome = _Outcome()
        budget.start()
        try:
            while True:
                retrying = outcome.attempts > 0
                try:
                    attempt = await self._attempt(
                        target, request, host, deadline, stats, outcome.attempts + 1
                    )
                finally:
                    if retrying:
                        budget.retry_done()
                if isinstance(attempt, RateLimited | CircuitOpen):
                    # A guard refused: the first attempt reports it, a retry keeps what it had.
                    if not retrying:
                        outcome.error = attempt
                    return outcome
                outcome.attempts += 1
                if isinstance(attempt, UpstreamError):
                    outcome.response, outcome.error = None, attempt
                    retryable, retry_after = attempt.retryable, None
                else:
                    outcome.response, outcome.error = attempt, None
                    retryable = strategy.retryable_status(attempt.status)
                    retry_after = parse_retry_after(attempt.header("retry-after"))
                decision = strategy.decide(
                    attempt=outcome.attempts,
                    retryable=retryable,
                    safe=safe,
                    retry_after_s=retry_after,
                    time_left_s=None if deadline is None else deadline - self._clock(),
                )
                if not decision.retry:
                    if retryable:
                        span.add_event("retry.stop", {"paca.reason": decision.reason})
                    return outcome
                if not budget.try_retry():
                    stats.retries_denied += 1
                    span.add_event("retry.stop", {"paca.reason": "retry budget exhausted"})
                    return outcome
                span.add_event(
                    "retry",
                    {"paca.attempt": outcome.attempts + 1, "paca.delay_s": decision.delay_s},
                )
                try:
                    await self._sleep(decision.delay_s)
                except BaseException:
                    budget.retry_done()
                    raise
        finally:
            budget.finish()

    async def _attempt(
        self,
        target: Target,
        request: HttpRequest,
        host: str,
        deadline: float | None,
        stats: TargetStats,
        number: int,
    ) -> HttpResponse | UpstreamError | RateLimited:
        """One pass through the guards and, if they admit it, one HTTP exchange."""
        waits = target.spec is not None and target.spec.rate_limit.wait
        refused = await self._take_token(target, request, deadline, stats, waits)
        if refused is not None:
            return refused
        bulkhead = self.guards.bulkhead(target.spec, host)
        if bulkhead is not None:
            try:
                await bulkhead.acquire(self._time_left(request, deadline) if waits else 0.0)
            except RateLimited as exc:
                stats.limiter_rejections += 1
                return exc
        try:
            admitted: list[tuple[CircuitBreaker, Ticket]] = []
            try:
                for breaker in self.guards.breakers(target.spec, host):
                    admitted.append((breaker, breaker.acquire()))
            except CircuitOpen as exc:
                for breaker, ticket in admitted:
                    breaker.cancel(ticket)
                stats.breaker_rejections += 1
                return exc
            timeout_s = request.timeout_s
            if deadline is not None:
                timeout_s = min(timeout_s, deadline - self._clock())
            result: HttpResponse | UpstreamError
            if timeout_s <= 0:
                result = UpstreamTimeout("the caller's deadline passed before the attempt")
            else:
                token = ATTEMPT.set(number)
                try:
                    result = await self.transport.send(
                        dataclasses.replace(request, timeout_s=timeout_s)
                    )
                except UpstreamError as exc:
                    result = exc
                except BaseException:
                    for breaker, ticket in admitted:
                        breaker.cancel(ticket)
                    raise
                finally:
                    ATTEMPT.reset(token)
            # A refused address or an oversize body says nothing about the upstream's health.
            failed = result.retryable if isinstance(result, UpstreamError) else result.status >= 500
            for breaker, ticket in admitted:
                breaker.record(ticket, failed=failed)
            return result
        finally:
            if bulkhead is not None:
                bulkhead.release()

    def _time_left(self, request: HttpRequest, deadline: float | None) -> float:
        """Longest a guard may keep an attempt waiting: what leaves time for the attempt."""
        left = request.timeout_s if deadline is None else deadline - self._clock()
        return max(0.0, left - MIN_ATTEMPT_S)

    async def _take_token(
        self,
        target: Target,
        request: HttpRequest,
        deadline: float | None,
        stats: TargetStats,
        waits: bool,
    ) -> RateLimited | None:
        """Pass the endpoint's rate limit (waiting for a slot if it says so); None: admitted."""
        spec = target.spec
        bucket = self.guards.bucket(spec)
        if spec is None or bucket is None:
            return None
        max_wait_s = self._time_left(request, deadline) if waits else 0.0
        reservation = None
        shared = self.guards.global_bucket(spec)
        if shared is not None:
            policy = spec.rate_limit
            reservation = await shared.reserve(
                spec.name, policy.requests_per_second, policy.burst, max_wait_s
            )
        if reservation is None:
            if spec.rate_limit.scope == api_types_pb2.RATE_LIMIT_SCOPE_GLOBAL:
                stats.limiter_degraded += 1
            reservation = bucket.reserve(max_wait_s)
            local = True
        else:
            local = False
        if not reservation.granted:
            stats.limiter_rejections += 1
            return RateLimited(f"over the rate limit of {target.endpoint}", reservation.wait_s)
        if reservation.wait_s > 0:
            stats.limiter_waits += 1
            stats.limiter_wait_s += reservation.wait_s
            try:
                await self._sleep(reservation.wait_s)
            except BaseException:
                if local:  # a shared reservation simply lapses
                    bucket.refund()
                raise
        return None

    def _record(
        self,
        target: Target,
        request: HttpRequest,
        started: timestamp_pb2.Timestamp,
        elapsed_ms: float,
        outcome: _Outcome,
    ) -> bool:
        """Queue the call's record; returns whether the call counts as a success."""
        response = outcome.response
        status = response.status if response is not None else 0
        success = response is not None and 200 <= status < 400
        record = db_types_pb2.ApiCallRecord(
            record_id=str(uuid.uuid4()),
            provider=target.provider,
            success=success,
            is_validation_error=False,
            response_time_ms=elapsed_ms,
            create_time=started,
            endpoint=target.endpoint,
            status_code=status,
            method=request.method,
            url=redact_url(request.url),
            trace_id=format(trace.get_current_span().get_span_context().trace_id, "032x"),
            attempts=outcome.attempts,
        )
        if response is not None and success:
            data = _json_data(response, self.max_data_bytes)
            if data is not None:
                record.data_json = data
        if response is None:
            record.error_message = str(outcome.error)
        elif not success:
            record.error_message = f"HTTP {status}"
        self.recorder.record(record)
        return success


def _json_data(response: HttpResponse, max_bytes: int) -> str | None:
    """The response body as JSON text when it is JSON and small enough to keep."""
    content_type = next((v for k, v in response.headers if k.lower() == "content-type"), "")
    if "json" not in content_type.lower() or len(response.body) > max_bytes:
        return None
    try:
        text = response.body.decode()
        json.loads(text)
    except ValueError:
        return None
    return text
