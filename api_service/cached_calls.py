"""The call engine's way through the response cache (a part of ``OutboundCaller``).

A call whose endpoint's cache policy applies is looked up first: a fresh entry answers it
(``paca.cache`` = ``hit``); otherwise one upstream request per key runs at a time
(``_after_lookup``), stale entries are revalidated (``revalidated``) or served when the upstream
fails (``stale``), and identical calls that arrive meanwhile share its answer (``coalesced``).

A call with a usable ``CachePlan`` (see ``api_service.cacheplan``) takes the short way: the plan
has its cache key, so the request is not prepared again unless the cache cannot answer it fresh.
When the parent span drops its children and the store is in memory, a fresh hit is answered by
plain function calls (``_fresh_reply``): no coroutine, no span, no ``Answer``. Either way it
counts a hit in the endpoint's stats and leaves no call record, as a hit always has.

Kept apart from ``api_service.caller`` so that each module holds one concern; the class is a
mixin whose other half (``prepare``, ``upstream``, the attributes below) is ``OutboundCaller``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from opentelemetry import trace
from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.attempts import Exchange, Outcome
from api_service.cache import ERROR_STATUSES, CacheEntry, ResponseCache
from api_service.cacheplan import CachePlan, CachePlans
from api_service.callrecord import Judge, Verdict
from api_service.registry import APIRegistry
from api_service.replies import Answer, CachedReplies, call_response
from api_service.request import Target
from api_service.stats import CallStats
from api_service.transport import HttpResponse, HttpTransport
from paca_runtime.telemetry import current_span, dropped_below

# The instrumentation scope of every ``api.call`` span, wherever it is started.
tracer = trace.get_tracer("api_service.caller")


class CachedCalls:
    """Answers through the response cache; mixed into ``OutboundCaller``."""

    registry: APIRegistry
    transport: HttpTransport
    cache: ResponseCache | None
    stats: CallStats
    _replies: CachedReplies
    _plans: CachePlans

    # OutboundCaller's, called here (see their docstrings there).
    prepare: Callable[..., Exchange]
    upstream: Callable[
        [Exchange, trace.Span, Judge], Awaitable[tuple[Outcome[HttpResponse], Verdict | None]]
    ]

    def _usable_plan(
        self, request: api_service_pb2.CallRequest, time_remaining_s: float | None
    ) -> CachePlan | None:
        """The plan of ``request`` if it has one whose checks still hold."""
        if self.cache is None:
            return None
        plan = self._plans.get(request)
        if plan is None or not plan.usable(
            self.registry, self.transport.network_policy, time_remaining_s
        ):
            return None
        return plan

    def _planning(
        self,
        request: api_service_pb2.CallRequest,
        call: Exchange,
        key: str,
        policy: api_types_pb2.CachePolicy,
        judge: Judge,
    ) -> None:
        """Remember the plan of a prepared call that goes through the cache."""
        spec = call.target.spec
        assert spec is not None
        plan = CachePlan(
            spec,
            self.transport.network_policy,
            call.target,
            call.request,
            call.host,
            key,
            policy,
            judge,
        )
        self._plans.remember(request, plan)

    def _fresh_reply(self, plan: CachePlan) -> api_service_pb2.CallResponse | None:
        """The reply of a fresh hit in memory under a parent that drops its children; None:
        the call takes ``_planned``."""
        started = time.perf_counter()
        cache = self.cache
        assert cache is not None
        memory = cache.in_memory
        if memory is None:
            return None
        parent = current_span()
        if not dropped_below(parent):
            return None
        entry = cache.lookup_nowait(memory, plan.key, plan.request)
        if entry is None or not entry.is_fresh(cache.now()):
            return None
        self.stats.target(plan.target.endpoint, plan.host).cache_hits += 1
        parent.set_attribute("paca.cache", "hit")
        return plan.reply(entry.response, time.perf_counter() - started)

    async def _planned(
        self,
        plan: CachePlan,
        request: api_service_pb2.CallRequest,
        time_remaining_s: float | None,
    ) -> api_service_pb2.CallResponse:
        """``call`` of a request with a usable plan: a fresh entry answers without the
        request being prepared again; anything else prepares it and goes the usual way."""
        started = time.perf_counter()
        parent = current_span()
        if dropped_below(parent):
            answer = await self._from_plan(plan, request, time_remaining_s, parent)
        else:
            with trace.use_span(start_span(plan.target), end_on_exit=True) as span:
                answer = await self._from_plan(plan, request, time_remaining_s, span)
        elapsed_s = time.perf_counter() - started
        if not answer.from_cache:
            return call_response(answer, elapsed_s)
        if answer.attempts == 0 and answer.response is plan.response:
            return plan.reply(answer.response, elapsed_s)
        return self._replies.reply(answer, elapsed_s)

    async def _from_plan(
        self,
        plan: CachePlan,
        request: api_service_pb2.CallRequest,
        time_remaining_s: float | None,
        span: trace.Span,
    ) -> Answer:
        cache = self.cache
        assert cache is not None
        stats = self.stats.target(plan.target.endpoint, plan.host)
        memory = cache.in_memory
        if memory is not None:
            entry = cache.lookup_nowait(memory, plan.key, plan.request)
        else:
            entry = await cache.lookup(plan.key, plan.request)
        if entry is not None and entry.is_fresh(cache.now()):
            stats.cache_hits += 1
            span.set_attribute("paca.cache", "hit")
            return plan.answer(entry.response)
        call = self.prepare(request, time_remaining_s)
        return await self._after_lookup(call, plan.key, entry, plan.policy, plan.judge, span)

    async def _through_cache(
        self,
        call: Exchange,
        key: str,
        policy: api_types_pb2.CachePolicy,
        judge: Judge,
        span: trace.Span,
    ) -> Answer:
        """Answer from the cache, or make (or join) the one upstream request for this key."""
        cache = self.cache
        assert cache is not None
        entry = await cache.lookup(key, call.request)
        if entry is not None and entry.is_fresh(cache.now()):
            call.stats.cache_hits += 1
            span.set_attribute("paca.cache", "hit")
            return Answer(entry.response, 0, True, judge(entry.response))
        return await self._after_lookup(call, key, entry, policy, judge, span)

    async def _after_lookup(
        self,
        call: Exchange,
        key: str,
        entry: CacheEntry | None,
        policy: api_types_pb2.CachePolicy,
        judge: Judge,
        span: trace.Span,
    ) -> Answer:
        """The one upstream request for a key the cache cannot answer fresh, made or joined."""
        cache = self.cache
        assert cache is not None
        answer, shared = await cache.coalesce(
            key, lambda: self._fill(key, entry, call, policy, judge, span)
        )
        if shared:
            call.stats.cache_hits += 1
            span.set_attribute("paca.cache", "coalesced")
            return answer._replace(attempts=0, from_cache=True)
        if answer.from_cache:
            call.stats.cache_hits += 1
        else:
            call.stats.cache_misses += 1
        return answer

    async def _fill(
        self,
        key: str,
        entry: CacheEntry | None,
        call: Exchange,
        policy: api_types_pb2.CachePolicy,
        judge: Judge,
        span: trace.Span,
    ) -> Answer:
        """One upstream request for a cache key: revalidate, refresh or fall back to stale."""
        cache = self.cache
        assert cache is not None
        validators = entry.conditional_headers() if entry is not None else []
        sent = call
        if validators:
            request = call.request._replace(headers=call.request.headers + validators)
            sent = call._replace(request=request)
        outcome, verdict = await self.upstream(sent, span, judge)
        response = outcome.response
        failed = response is None or response.status in ERROR_STATUSES
        if failed and entry is not None and entry.usable_on_error(cache.now()):
            span.set_attribute("paca.cache", "stale")
            return Answer(entry.response, outcome.attempts, True, judge(entry.response))
        answer = upstream_answer(outcome, verdict, from_cache=False)
        if answer.response.status == 304 and entry is not None and validators:
            span.set_attribute("paca.cache", "revalidated")
            fresh = await cache.revalidated(key, call.request, entry, answer.response, policy)
            return Answer(fresh, answer.attempts, True, judge(fresh))
        span.set_attribute("paca.cache", "miss")
        if answer.verdict.cacheable:
            await cache.store_response(key, call.request, answer.response, policy)
        return answer


def upstream_answer(
    outcome: Outcome[HttpResponse], verdict: Verdict | None, *, from_cache: bool
) -> Answer:
    """The answer of an upstream exchange; raises its error when no reply arrived."""
    if outcome.response is None or verdict is None:
        assert outcome.error is not None
        raise outcome.error
    return Answer(outcome.response, outcome.attempts, from_cache, verdict)


def start_span(target: Target, name: str = "api.call") -> trace.Span:
    """The span of one call to ``target`` (not current): see ``OutboundCaller.start_span``."""
    parent = current_span()
    if dropped_below(parent):
        return trace.NonRecordingSpan(parent.get_span_context())
    return tracer.start_span(
        name,
        attributes={
            "paca.provider": target.provider,
            "paca.endpoint": target.endpoint,
            "http.request.method": target.method,
        },
    )
