"""Webhooks inside api_service: the intake server and WebhookService, sharing counters."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from paca.db.v1 import event_store_service_pb2_grpc as store_grpc
from paca.monitor.v1 import monitor_types_pb2

from api_service.webhooks.delivery import SERVICE_NAME, WebhookServicer
from api_service.webhooks.intake import WebhookIntake
from api_service.webhooks.settings import WebhookSettings
from api_service.webhooks.stats import Wakeup, WebhookStats
from paca_runtime import GrpcServer


class Webhooks:
    """Intake and delivery of webhooks, stored through db_service on ``db_channel``.

    Lifecycle: ``register()`` on the gRPC server before it starts, ``start()`` once (starts
    the intake when sources are configured and returns its address, else ""), ``aclose()``
    (idempotent).
    """

    def __init__(self, settings: WebhookSettings, db_channel: grpc.aio.Channel) -> None:
        self.settings = settings
        self.stats = WebhookStats()
        wakeup = Wakeup()
        store = store_grpc.EventStoreServiceStub(db_channel)
        self.servicer = WebhookServicer(settings, store, self.stats, wakeup)
        self.intake = (
            WebhookIntake(settings, store, self.stats, wakeup) if settings.sources else None
        )

    def __repr__(self) -> str:
        return f"<Webhooks sources={len(self.settings.sources)} {self.intake!r}>"

    def register(self, server: GrpcServer) -> None:
        server.add_service(SERVICE_NAME, self.servicer.register)

    async def start(self) -> str:
        return await self.intake.start() if self.intake is not None else ""

    async def aclose(self) -> None:
        if self.intake is not None:
            await self.intake.aclose()
        await self.servicer.aclose()

    def figures(self) -> Iterator[monitor_types_pb2.Metric]:
        return self.stats.figures()
