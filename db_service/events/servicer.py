"""EventStoreService over gRPC: a thin adapter from messages to :class:`EventStore`.

The events live in the ``main`` database, next to the call log, where built-in migration 0002
creates their tables on every engine.
"""

from __future__ import annotations

import grpc
from paca.db.v1 import event_store_service_pb2 as pb
from paca.db.v1 import event_store_service_pb2_grpc as pb_grpc

from db_service.databases import Databases
from db_service.events.store import EventStore
from paca_runtime.errors import translate_errors

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EventStoreService"].full_name
EVENTS_DATABASE = "main"


class EventStoreServicer(pb_grpc.EventStoreServiceServicer):
    """Serves the event store of a db_service process; counts what it stored for reports."""

    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self._store: EventStore | None = None
        self.stored = 0
        self.duplicates = 0

    def __repr__(self) -> str:
        return f"<EventStoreServicer stored={self.stored} duplicates={self.duplicates}>"

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_EventStoreServiceServicer_to_server(self, server)

    @property
    def store(self) -> EventStore:
        # Built lazily: the backend is looked up once the databases are open.
        if self._store is None:
            self._store = EventStore(self.databases.get(EVENTS_DATABASE))
        return self._store

    @translate_errors
    async def StoreEvent(
        self, request: pb.StoreEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreEventResponse:
        duplicate = await self.store.store(request.event)
        if duplicate:
            self.duplicates += 1
        else:
            self.stored += 1
        return pb.StoreEventResponse(duplicate=duplicate)

    @translate_errors
    async def ClaimEvents(
        self, request: pb.ClaimEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimEventsResponse:
        result = await self.store.claim(
            request.group,
            source=request.source,
            event_type=request.event_type,
            max_events=request.max_events,
            visibility_ms=request.visibility_timeout.ToMilliseconds(),
            max_attempts=request.max_attempts,
        )
        return pb.ClaimEventsResponse(events=result.events, parked=result.parked)

    @translate_errors
    async def AckEvents(
        self, request: pb.AckEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AckEventsResponse:
        acked = await self.store.ack(request.group, request.leases)
        return pb.AckEventsResponse(acked=acked, stale=len(request.leases) - acked)

    @translate_errors
    async def ReleaseEvents(
        self, request: pb.ReleaseEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseEventsResponse:
        return pb.ReleaseEventsResponse(
            released=await self.store.release(request.group, request.leases)
        )

    @translate_errors
    async def ListDeadEvents(
        self, request: pb.ListDeadEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadEventsResponse:
        return pb.ListDeadEventsResponse(events=await self.store.dead(request.group, request.limit))

    @translate_errors
    async def ReplayEvents(
        self, request: pb.ReplayEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayEventsResponse:
        since_ms = request.since.ToMilliseconds() if request.HasField("since") else 0
        replayed = await self.store.replay(request.group, since_ms, request.source)
        return pb.ReplayEventsResponse(replayed=replayed)

    @translate_errors
    async def GetEventStats(
        self, request: pb.GetEventStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEventStatsResponse:
        return await self.store.stats(request.group)
