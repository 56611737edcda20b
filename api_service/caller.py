"""The outbound call engine: resolve the target, build the request, send it, record it.

For an endpoint whose cache policy is on (GET/HEAD), the cache comes first (see
``api_service.cache`` and ``api_service.cached_calls``): a fresh entry answers without an
upstream request; otherwise one upstream request per cache key runs at a time (stale entries
revalidated, served stale when the upstream fails) and concurrent identical calls share its
answer. Then the attempt loop (see
``api_service.attempts``) runs guards, HTTP attempts and retries until it has an answer worth
returning: an upstream reply of any status is returned as such; no reply is the last error.

Every call that reaches the upstream, or is refused by a guard, leaves one ``ApiCallRecord``
(with its attempt count) in the call log (see ``api_service.callrecord``); a request refused as
bad input never reaches the upstream and is not recorded, and neither is a call answered by the
cache alone (GetStats counts it as a cache hit). Each HTTP attempt is a client span under
``api.call`` carrying ``http.request.resend_count``; each wait is a ``retry`` event on
``api.call``.

The same engine serves ``Call``, ``GraphQL`` (``api_service.graphql``), ``CallStream``
(``api_service.streaming``) and ``FanOut`` (``api_service.fanout``): they differ in how the
request is built, how a reply is judged and what is read of its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.attempts import AttemptLoop, Exchange, Outcome, R
from api_service.auth.manager import AuthManager
from api_service.cache import ResponseCache
from api_service.cache_redis import response_cache
from api_service.cached_calls import CachedCalls, start_span, upstream_answer
from api_service.cacheplan import CachePlans
from api_service.calllog import CallRecorder
from api_service.callrecord import Judge, Verdict, build_record, http_verdict
from api_service.errors import UpstreamError
from api_service.redirects import follow, redirect_rule
from api_service.registry import APIRegistry
from api_service.replies import Answer, CachedReplies, call_response
from api_service.request import build, gzipped, resolve
from api_service.resilience import Guards, is_safe_to_repeat
from api_service.safety import NetworkPolicy, parse_networks
from api_service.settings import ApiSettings, ResilienceSettings
from api_service.stats import CallStats
from api_service.transport import HttpRequest, HttpResponse, HttpTransport
from paca_runtime.telemetry import current_span, dropped_below


class OutboundCaller(CachedCalls):
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
        auth: AuthManager | None = None,
    ) -> None:
        self.registry = registry
        # Credentials of endpoints with an auth policy (key pools, OAuth2 clients).
        self.auth = auth or AuthManager()
        self.auth.bind(transport.send)
        self.transport = transport
        self.recorder = recorder
        self.default_timeout_s = default_timeout_s
        self.max_data_bytes = max_data_bytes
        self.loop = AttemptLoop(guards or Guards(ResilienceSettings()), clock=clock, sleep=sleep)
        self.cache = cache
        self.stats = CallStats()
        self._replies = CachedReplies()
        self._plans = CachePlans()
        self.calls = 0
        self.failures = 0

    @classmethod
    def from_settings(
        cls, settings: ApiSettings, registry: APIRegistry, recorder: CallRecorder
    ) -> OutboundCaller:
        """The engine as ``settings`` describe it: one construction for every way in.

        The transport, guards and cache it creates are the caller's to open and close
        (``transport.open()``, ``guards.open()``; ``aclose()`` of each, and of the cache).
        """
        return cls(
            registry,
            HttpTransport(
                network_policy=NetworkPolicy(parse_networks(settings.allowed_networks)),
                max_response_bytes=settings.max_response_bytes,
            ),
            recorder,
            default_timeout_s=settings.api_timeout_s,
            max_data_bytes=settings.calllog.max_data_bytes,
            guards=Guards(settings.resilience),
            cache=response_cache(
                settings.cache_max_bytes, settings.cache_redis_url, settings.cache_redis_timeout_s
            ),
            auth=AuthManager(settings.auth),
        )

    def __repr__(self) -> str:
        return f"<OutboundCaller calls={self.calls} failures={self.failures} {self.guards!r}>"

    @property
    def guards(self) -> Guards:
        return self.loop.guards

    @guards.setter
    def guards(self, guards: Guards) -> None:
        self.loop.guards = guards

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
        plan = self._usable_plan(request, time_remaining_s)
        if plan is not None:  # the same request as before, to the same endpoint: see CachedCalls
            reply = self._fresh_reply(plan)
            if reply is not None:
                return reply
            return await self._planned(plan, request, time_remaining_s)
        if request.WhichOneof("target") == "endpoint" and request.endpoint not in self.registry:
            await self.known(request)  # read through once; in memory, no await at all
        call = self.prepare(request, time_remaining_s)
        started = time.perf_counter()
        parent = current_span()
        if dropped_below(parent):
            # The (non-recording, already current) parent stands in, as in ``span``.
            answer = await self._answering(call, parent, request)
        else:
            with trace.use_span(self.start_span(call), end_on_exit=True) as span:
                answer = await self._answering(call, span, request)
        elapsed_s = time.perf_counter() - started
        if answer.from_cache:
            return self._replies.reply(answer, elapsed_s)
        return call_response(answer, elapsed_s)

    def _answering(
        self, call: Exchange, span: trace.Span, request: api_service_pb2.CallRequest
    ) -> Awaitable[Answer]:
        """``call``'s answer, through the cache when its endpoint's policy enables it (a
        plain function returning the coroutine: one frame less on every call)."""
        policy = call.target.spec.cache if call.target.spec is not None else None
        cache = self.cache
        if cache is not None and policy is not None and cache.applies(call.request, policy):
            key = cache.key(call.request, policy)
            judge = http_verdict(call.target)
            self._planning(request, call, key, policy, judge)
            return self._through_cache(call, key, policy, judge, span)
        return self.execute(call, span, http_verdict(call.target))

    async def known(self, request: api_service_pb2.CallRequest) -> None:
        """Make sure the registry's memory has the request's endpoint, if it names one: one
        registered by another replica since the last refresh is read through once.

        Raises:
            UnknownEndpoint: No replica registered it.
        """
        if request.WhichOneof("target") == "endpoint":
            await self.registry.fetch(request.endpoint, "endpoint")  # memory first

    def prepare(
        self,
        request: api_service_pb2.CallRequest,
        time_remaining_s: float | None,
        *,
        safe: bool | None = None,
    ) -> Exchange:
        """Resolve and check a request (nothing sent yet); ``safe`` overrides the method's."""
        target = resolve(self.registry, request)
        http_request = build(request, target, self.default_timeout_s, time_remaining_s)
        self.transport.network_policy.check_url(http_request.url)
        spec = target.spec
        if http_request.body and (
            request.compress_body or (spec is not None and spec.compress_request_body)
        ):
            http_request = gzipped(http_request)
        deadline = None if time_remaining_s is None else self.loop.now() + time_remaining_s
        host = urlsplit(http_request.url).netloc.rpartition("@")[2]
        if safe is None:
            safe = is_safe_to_repeat(target.method, request.idempotency_key)
        stats = self.stats.target(target.endpoint, host)
        rule = redirect_rule(
            request.redirect if request.HasField("redirect") else None,
            spec.redirect if spec is not None and spec.HasField("redirect") else None,
        )
        return Exchange(target, http_request, host, deadline, stats, safe, rule)

    def span(self, call: Exchange, name: str = "api.call") -> AbstractContextManager[trace.Span]:
        """The span of one call, current while the block runs.

        Under a parent whose children are all dropped, that (non-recording, already current)
        parent stands in: the context it carries on is the same, and making a stand-in of it
        current would cost a context switch each way for nothing kept.
        """
        parent = current_span()
        if dropped_below(parent):
            return contextlib.nullcontext(parent)
        return trace.use_span(self.start_span(call, name), end_on_exit=True)

    @staticmethod
    def start_span(call: Exchange, name: str = "api.call") -> trace.Span:
        """The span of one call, named by its provider, endpoint and method (not current).

        Under an unsampled parent it is the parent's context alone: the parent-based samplers
        of this process drop every child of such a parent, and asking the SDK to start one
        (sampler, ids, attributes) would cost a tenth of a cache hit for nothing kept.
        """
        return start_span(call.target, name)

    async def execute(
        self,
        call: Exchange,
        span: trace.Span,
        judge: Judge,
        cache_key: tuple[str, api_types_pb2.CachePolicy] | None = None,
    ) -> Answer:
        """Answer a prepared call, through the cache when ``cache_key`` is given."""
        if self.cache is not None and cache_key is not None:
            return await self._through_cache(call, cache_key[0], cache_key[1], judge, span)
        outcome, verdict = await self.upstream(call, span, judge)
        return upstream_answer(outcome, verdict, from_cache=False)

    async def upstream(
        self, call: Exchange, span: trace.Span, judge: Judge
    ) -> tuple[Outcome[HttpResponse], Verdict | None]:
        """The upstream exchange with its guards and retries, recorded and counted."""
        started_ns = time.time_ns()  # wall clock: the record's create_time
        started = time.perf_counter()
        self.calls += 1
        outcome: Outcome[HttpResponse] = Outcome()
        try:
            await self.loop.run(call, self.sender(call, self.transport.send), span, outcome=outcome)
        except asyncio.CancelledError:
            # The caller left (or a fan-out's deadline passed): the call is still recorded.
            outcome.response = None
            outcome.error = UpstreamError("the caller cancelled the call")
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.finish(call, span, started_ns, elapsed_ms, outcome, None)
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        verdict = judge(outcome.response) if outcome.response is not None else None
        self.finish(call, span, started_ns, elapsed_ms, outcome, verdict)
        return outcome, verdict

    def sender(
        self,
        call: Exchange,
        send: Callable[[HttpRequest], Awaitable[R]],
        discard: Callable[[R], Awaitable[None]] | None = None,
    ) -> Callable[[HttpRequest], Awaitable[R]]:
        """One attempt's exchange, whole-body or streamed: ``send`` behind the redirect policy.

        The one place where what wraps every attempt's exchange (redirects; credentials) goes.
        """

        hop = send
        spec = call.target.spec
        if spec is not None and self.auth.applies(spec):
            origin = _origin(call.request.url)

            async def authorized(request: HttpRequest) -> R:
                # Each hop of the endpoint's own origin carries a key; a redirect elsewhere
                # never gets one.
                if _origin(request.url) != origin:
                    return await send(request)
                return await self.auth.send(spec, request, send, discard)

            hop = authorized

        check_url = self.transport.network_policy.check_url

        def exchange(request: HttpRequest) -> Awaitable[R]:
            # The coroutine of ``follow`` itself: one frame less on every attempt.
            return follow(hop, request, call.redirects, check_url=check_url, discard=discard)

        return exchange

    def finish(
        self,
        call: Exchange,
        span: trace.Span,
        started_ns: int,
        elapsed_ms: float,
        outcome: Outcome[Any],
        verdict: Verdict | None,
        *,
        data: bytes | None = None,
    ) -> None:
        """Record and count a finished upstream exchange (``data``: the body to keep);
        ``span`` is the call's, the current span."""
        span.set_attribute("paca.attempts", outcome.attempts)
        span_context = span.get_span_context()
        if data is None and isinstance(outcome.response, HttpResponse):
            data = outcome.response.body
        record = build_record(
            call.target,
            call.request,
            started_ns,
            elapsed_ms,
            outcome,
            verdict,
            data=data,
            max_data_bytes=self.max_data_bytes,
            span_context=span_context,
        )
        self.recorder.record(record, span_context)
        if record.is_validation_error:
            call.stats.validation_errors += 1
        call.stats.record_call(
            success=record.success, attempts=outcome.attempts, latency_ms=elapsed_ms
        )
        if outcome.response is None:
            self.failures += 1


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port
