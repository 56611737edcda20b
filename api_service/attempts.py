"""One call's attempt loop: guards, one HTTP exchange per attempt, retries under a deadline.

Each attempt passes the guards in this order, then makes one exchange::

    rate limit (token bucket: wait or RESOURCE_EXHAUSTED) → bulkhead slot for the host →
    breakers (endpoint, host: UNAVAILABLE + RetryInfo when open) → HTTP exchange →
    outcome to the breakers → retry strategy and budget decide → jittered wait → again

The caller's deadline caps everything: each attempt's timeout is cut to the time left, and a
wait that would not leave time for another attempt is not started; the loop then ends with its
last outcome. A guard that refuses a retry also ends it with the last outcome; only when the
first attempt is refused is the guard's error the outcome.

The exchange itself is a parameter (``send``): a whole-body request, a streamed one, or either
behind the redirect policy; anything with a ``status`` and a ``header()`` is a reply. A reply
that is retried is handed to ``discard`` first (a streamed body is closed there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

from opentelemetry import trace
from paca.api.v1 import api_types_pb2

from api_service.errors import CircuitOpen, RateLimited, UpstreamError, UpstreamTimeout
from api_service.redirects import RedirectRule
from api_service.request import Target
from api_service.resilience import Guards, parse_retry_after
from api_service.resilience.breaker import CircuitBreaker, Ticket
from api_service.stats import TargetStats
from api_service.transport import ATTEMPT, HttpRequest

# Time an attempt needs at least; guards do not wait into it.
MIN_ATTEMPT_S = 0.01
DEFAULT_REDIRECTS = RedirectRule()


class Reply(Protocol):
    """What an exchange returns: a status and headers (the body is the exchange's business)."""

    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None: ...


R = TypeVar("R", bound=Reply)


@dataclass(slots=True)
class Outcome(Generic[R]):
    """Where a call ended: a reply or an error, after ``attempts`` HTTP attempts."""

    response: R | None = None
    error: UpstreamError | RateLimited | None = None
    attempts: int = 0


class Exchange(NamedTuple):
    """One call's resolved target, request, host, deadline and stats."""

    target: Target
    request: HttpRequest
    # host:port without userinfo: it names breakers, stats and metrics.
    host: str
    # Monotonic time by which the call must end; None: only the per-attempt timeout.
    deadline: float | None
    stats: TargetStats
    # The method is idempotent or the caller gave an idempotency key.
    safe: bool
    redirects: RedirectRule = DEFAULT_REDIRECTS


class AttemptLoop:
    """Runs exchanges through the guards and the retry strategy of their endpoint and host.

    Args:
        guards: Breakers, limiters and retry budgets.
        clock: Monotonic seconds, for deadlines.
        sleep: Waits between attempts and for rate-limit reservations.
    """

    def __init__(
        self,
        guards: Guards,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.guards = guards
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<AttemptLoop {self.guards!r}>"

    def now(self) -> float:
        return self._clock()

    async def run(
        self,
        call: Exchange,
        send: Callable[[HttpRequest], Awaitable[R]],
        span: trace.Span,
        discard: Callable[[R], Awaitable[None]] | None = None,
        outcome: Outcome[R] | None = None,
    ) -> Outcome[R]:
        """Attempts until a reply or error is worth returning; never raises an upstream error.

        ``outcome``, when given, is filled as the loop goes, so a caller that is cancelled
        still knows how many attempts were made.
        """
        strategy = self.guards.retry_strategy(call.target.spec)
        budget = self.guards.budget(call.host)
        outcome = outcome if outcome is not None else Outcome()
        budget.start()
        try:
            while True:
                retrying = outcome.attempts > 0
                try:
                    attempt = await self._attempt(call, send, outcome.attempts + 1)
                finally:
                    if retrying:
                        budget.retry_done()
                if isinstance(attempt, (RateLimited, CircuitOpen)):
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
                    # Only a retry waits: the header of any other reply is not read.
                    retry_after = (
                        parse_retry_after(attempt.header("retry-after")) if retryable else None
                    )
                if not retryable:  # most outcomes: nothing to decide
                    return outcome
                decision = strategy.decide(
                    attempt=outcome.attempts,
                    retryable=retryable,
                    safe=call.safe,
                    retry_after_s=retry_after,
                    time_left_s=None if call.deadline is None else call.deadline - self._clock(),
                )
                if not decision.retry:
                    span.add_event("retry.stop", {"paca.reason": decision.reason})
                    return outcome
                if not budget.try_retry():
                    call.stats.retries_denied += 1
                    span.add_event("retry.stop", {"paca.reason": "retry budget exhausted"})
                    return outcome
                span.add_event(
                    "retry",
                    {"paca.attempt": outcome.attempts + 1, "paca.delay_s": decision.delay_s},
                )
                if outcome.response is not None and discard is not None:
                    await discard(outcome.response)
                try:
                    await self._sleep(decision.delay_s)
                except BaseException:
                    budget.retry_done()
                    raise
        finally:
            budget.finish()

    async def _attempt(
        self, call: Exchange, send: Callable[[HttpRequest], Awaitable[R]], number: int
    ) -> R | UpstreamError | RateLimited:
        """One pass through the guards and, if they admit it, one HTTP exchange."""
        spec = call.target.spec
        waits = spec is not None and spec.rate_limit.wait
        if spec is not None and spec.rate_limit.requests_per_second > 0:
            refused = await self._take_token(call, waits)
            if refused is not None:
                return refused
        bulkhead = self.guards.bulkhead(spec, call.host)
        if bulkhead is not None:
            try:
                await bulkhead.acquire(self._time_left(call) if waits else 0.0)
            except RateLimited as exc:
                call.stats.limiter_rejections += 1
                return exc
        try:
            admitted: list[tuple[CircuitBreaker, Ticket]] = []
            try:
                for breaker in self.guards.breakers(spec, call.host):
                    admitted.append((breaker, breaker.acquire()))
            except CircuitOpen as exc:
                for breaker, ticket in admitted:
                    breaker.cancel(ticket)
                call.stats.breaker_rejections += 1
                return exc
            timeout_s = call.request.timeout_s
            if call.deadline is not None:
                timeout_s = min(timeout_s, call.deadline - self._clock())
            result: R | UpstreamError
            if timeout_s <= 0:
                result = UpstreamTimeout("the caller's deadline passed before the attempt")
            else:
                token = ATTEMPT.set(number)
                try:
                    request = call.request
                    if timeout_s != request.timeout_s:  # a third of _replace
                        request = HttpRequest(
                            request.method, request.url, request.headers, request.body, timeout_s
                        )
                    result = await send(request)
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

    def _time_left(self, call: Exchange) -> float:
        """Longest a guard may keep an attempt waiting: what leaves time for the attempt."""
        left = call.request.timeout_s if call.deadline is None else call.deadline - self._clock()
        return max(0.0, left - MIN_ATTEMPT_S)

    async def _take_token(self, call: Exchange, waits: bool) -> RateLimited | None:
        """Pass the endpoint's rate limit (waiting for a slot if it says so); None: admitted."""
        spec = call.target.spec
        bucket = self.guards.bucket(spec)
        if spec is None or bucket is None:
            return None
        stats = call.stats
        max_wait_s = self._time_left(call) if waits else 0.0
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
            return RateLimited(f"over the rate limit of {call.target.endpoint}", reservation.wait_s)
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
