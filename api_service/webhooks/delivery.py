"""WebhookService over gRPC: streams stored events to consumer groups, with ack and redelivery.

A ``Subscribe`` stream claims small batches of its group's events from db_service (the claim is
atomic there, so subscribers on any number of replicas never hold the same event at once),
sends them, and when idle waits for this replica's intake to store something or for the poll
interval. Leases the stream still holds when its subscriber goes away are released, so another
subscriber gets those events at once instead of after the visibility timeout. Every delivery is
a ``webhook.deliver`` span in the trace of the HTTP request that brought the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from opentelemetry import propagate, trace
from paca.api.v1 import webhook_service_pb2 as pb
from paca.api.v1 import webhook_service_pb2_grpc as pb_grpc
from paca.db.v1 import event_store_service_pb2 as store_pb
from paca.db.v1 import event_store_service_pb2_grpc as store_grpc

from api_service.webhooks.settings import WebhookSettings
from api_service.webhooks.stats import Wakeup, WebhookStats
from paca_runtime.errors import InvalidArgument, Unavailable, translate_errors

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WebhookService"].full_name
CLAIM_BATCH = 16
MAX_GROUP_CHARS = 100
# Store errors a stream rides out by waiting and claiming again.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _group(group: str) -> str:
    if not group or len(group) > MAX_GROUP_CHARS:
        raise InvalidArgument("group", f"required, at most {MAX_GROUP_CHARS} characters")
    return group


def _store_error(exc: grpc.aio.AioRpcError) -> Exception:
    """The status a caller sees when db_service's event store refused or failed a call."""
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument("request", exc.details() or "refused by the event store")
    return Unavailable(f"event store: {exc.code().name}", retry_after_s=1.0)


def _ack_id(event: store_pb.LeasedEvent) -> str:
    return f"{event.event_key}.{event.lease_token}"


def _lease(ack_id: str) -> store_pb.LeaseRef:
    key, _, token = ack_id.partition(".")
    if not key.isdigit() or not token:
        raise InvalidArgument("ack_id", "not an ack_id from a delivered event")
    return store_pb.LeaseRef(event_key=int(key), lease_token=token)


def _delivered(leased: store_pb.LeasedEvent, ack_id: str) -> pb.DeliveredEvent:
    stored = leased.event
    return pb.DeliveredEvent(
        source=stored.source,
        event_id=stored.event_id,
        event_type=stored.event_type,
        body=stored.body,
        headers=stored.headers,
        receive_time=stored.receive_time,
        attempt=leased.attempt,
        ack_id=ack_id,
    )


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    """Serves WebhookService from the event store behind ``store``.

    Args:
        clock: Monotonic seconds, to forget leases older than the visibility timeout.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        store: store_grpc.EventStoreServiceStub,
        stats: WebhookStats,
        wakeup: Wakeup,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.stats = stats
        self.wakeup = wakeup
        self.clock = clock
        self.subscribers = 0
        # Release calls of streams that ended; kept so they are not garbage-collected mid-call.
        self._releases: set[asyncio.Task[None]] = set()
        self._visibility = duration_pb2.Duration()
        self._visibility.FromMilliseconds(int(settings.visibility_timeout_s * 1000))

    def __repr__(self) -> str:
        return f"<WebhookServicer subscribers={self.subscribers} delivered={self.stats.delivered}>"

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_WebhookServiceServicer_to_server(self, server)

    async def aclose(self) -> None:
        """Wait for the release calls of ended streams (idempotent)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubscribeResponse]:
        try:
            _group(request.group)
        except InvalidArgument as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        claim = store_pb.ClaimEventsRequest(
            group=request.group,
            source=request.source,
            event_type=request.event_type,
            max_events=CLAIM_BATCH,
            visibility_timeout=self._visibility,
            max_attempts=self.settings.max_attempts,
        )
        # Leases this stream handed out, oldest first, with when; older than the visibility
        # timeout they have expired anyway and are forgotten.
        held: OrderedDict[str, float] = OrderedDict()
        # A claim cut short by the subscriber leaving still leases events in the store: it is
        # shielded, and what it leased is released with the rest when the stream ends.
        pending: asyncio.Task[store_pb.ClaimEventsResponse] | None = None
        self.subscribers += 1
        try:
            while True:
                pending = asyncio.ensure_future(
                    self.store.ClaimEvents(claim, timeout=self.settings.store_timeout_s)
                )
                try:
                    reply = await asyncio.shield(pending)
                    pending = None
                except grpc.aio.AioRpcError as exc:
                    pending = None
                    if exc.code() not in _TRANSIENT:
                        await context.abort(exc.code(), exc.details() or "event store error")
                    logger.warning("claiming webhook events failed: %s", exc.code().name)
                    await self.wakeup.wait(self.settings.poll_interval_s)
                    continue
                self.stats.dead += reply.parked
                if not reply.events:
                    await self.wakeup.wait(self.settings.poll_interval_s)
                    continue
                for leased in reply.events:
                    ack_id = _ack_id(leased)
                    held[ack_id] = self.clock()
                    yield self._send(leased, ack_id, request.group)
                self._forget_expired(held)
        finally:
            self.subscribers -= 1
            self._release(request.group, list(held), pending)

    def _send(self, leased: store_pb.LeasedEvent, ack_id: str, group: str) -> pb.SubscribeResponse:
        parent = propagate.extract({"traceparent": leased.event.traceparent})
        # Not made current: the span would otherwise stay attached across the generator's yield.
        span = tracer.start_span(
            "webhook.deliver",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "webhook.source": leased.event.source,
                "webhook.event_id": leased.event.event_id,
                "webhook.group": group,
                "webhook.attempt": leased.attempt,
            },
        )
        span.end()
        self.stats.delivered += 1
        if leased.attempt > 1:
            self.stats.redelivered += 1
        return pb.SubscribeResponse(event=_delivered(leased, ack_id))

    def _forget_expired(self, held: OrderedDict[str, float]) -> None:
        horizon = self.clock() - self.settings.visibility_timeout_s
        while held and next(iter(held.values())) < horizon:
            held.popitem(last=False)

    def _release(
        self,
        group: str,
        ack_ids: list[str],
        pending: asyncio.Task[store_pb.ClaimEventsResponse] | None,
    ) -> None:
        if not ack_ids and pending is None:
            return

        async def release() -> None:
            leases = [_lease(a) for a in ack_ids]
            if pending is not None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    late = await pending
                    leases += [_lease(_ack_id(e)) for e in late.events]
            if not leases:
                return
            request = store_pb.ReleaseEventsRequest(group=group, leases=leases)
            # Acked leases are left alone by the store; this only frees what was not acked.
            try:
                await self.store.ReleaseEvents(request, timeout=self.settings.store_timeout_s)
            except grpc.aio.AioRpcError as exc:
                logger.warning("releasing webhook leases failed: %s", exc.code().name)

        # The stream's task is being cancelled: the release runs as its own task.
        task = asyncio.get_running_loop().create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.settings.store_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _store_error(exc) from exc

    @translate_errors
    async def AckEvent(
        self, request: pb.AckEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.AckEventResponse:
        reply = await self._call(
            self.store.AckEvents,
            store_pb.AckEventsRequest(group=_group(request.group), leases=[_lease(request.ack_id)]),
        )
        return pb.AckEventResponse(acked=reply.acked == 1)

    @translate_errors
    async def ReplayEvents(
        self, request: pb.ReplayEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayEventsResponse:
        reply = await self._call(
            self.store.ReplayEvents,
            store_pb.ReplayEventsRequest(
                group=request.group, since=request.since, source=request.source
            ),
        )
        self.wakeup.notify()
        return pb.ReplayEventsResponse(replayed=reply.replayed)

    @translate_errors
    async def ListDeadEvents(
        self, request: pb.ListDeadEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadEventsResponse:
        reply = await self._call(
            self.store.ListDeadEvents,
            store_pb.ListDeadEventsRequest(group=request.group, limit=request.limit),
        )
        return pb.ListDeadEventsResponse(events=[_delivered(e, "") for e in reply.events])

    @translate_errors
    async def GetWebhookStats(
        self, request: pb.GetWebhookStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWebhookStatsResponse:
        store = await self._call(
            self.store.GetEventStats,
            store_pb.GetEventStatsRequest(group=request.group),
        )
        s = self.stats
        return pb.GetWebhookStatsResponse(
            accepted=s.accepted,
            duplicates=s.duplicates,
            rejected=dict(s.rejected),
            store_failures=s.store_failures,
            delivered=s.delivered,
            redelivered=s.redelivered,
            dead=s.dead,
            stored_events=store.events,
            groups=[
                pb.WebhookGroupStats(
                    group=g.group, pending=g.pending, leased=g.leased, acked=g.acked, dead=g.dead
                )
                for g in store.groups
            ],
        )
