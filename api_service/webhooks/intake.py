"""The webhook intake: ``POST /webhooks/{source}`` over aiohttp, inside api_service.

A request is verified by its source's scheme, stored through db_service's EventStoreService and
only then answered 2xx, so an acknowledged webhook is never lost; when the store cannot take it
the sender gets 503 and retries (senders re-send the same id, which is stored once). Refusals
are 4xx with a JSON ``{"error": reason, "message": ...}`` and store nothing.

Each request is one trace: ``webhook.intake`` (continuing a sender's ``traceparent`` when it
sends one) with ``webhook.verify`` and the StoreEvent RPC as children; the intake span's context
is stored with the event so delivery spans join the same trace.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import grpc
from aiohttp import web
from opentelemetry import propagate, trace
from paca.db.v1 import event_store_service_pb2 as store_pb
from paca.db.v1 import event_store_service_pb2_grpc as store_grpc

from api_service.webhooks.settings import WebhookSettings
from api_service.webhooks.stats import Wakeup, WebhookStats
from api_service.webhooks.verify import Rejected, verify

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Request headers stored with an event (never signatures or credentials).
KEPT_HEADERS = (
    "Content-Type",
    "User-Agent",
    "webhook-id",
    "webhook-timestamp",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-GitHub-Hook-ID",
    "X-Event-Type",
    "X-Webhook-Id",
)


def _reply(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status)


class WebhookIntake:
    """The intake HTTP server.

    Lifecycle: ``start()`` once (returns the bound ``host:port``), ``aclose()`` (idempotent;
    requests in flight finish first).

    Args:
        wall: Unix time in seconds, for timestamp tolerance (injectable for tests).
    """

    def __init__(
        self,
        settings: WebhookSettings,
        store: store_grpc.EventStoreServiceStub,
        stats: WebhookStats,
        wakeup: Wakeup,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.stats = stats
        self.wakeup = wakeup
        self.wall = wall
        self.bound_address = ""
        self._runner: web.AppRunner | None = None
        app = web.Application(client_max_size=settings.max_body_bytes)
        app.router.add_post("/webhooks/{source}", self.handle)
        self.app = app

    def __repr__(self) -> str:
        return f"<WebhookIntake {self.bound_address or 'stopped'} accepted={self.stats.accepted}>"

    async def start(self) -> str:
        host, _, port = self.settings.listen.rpartition(":")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, int(port), reuse_port=self.settings.reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.bound_address = f"{bound[0]}:{bound[1]}"
        logger.info("webhook intake listening on %s", self.bound_address)
        return self.bound_address

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _reject(self, span: trace.Span, exc: Rejected, source: str) -> web.Response:
        self.stats.rejected[exc.reason] += 1
        span.set_attribute("webhook.rejected", exc.reason)
        logger.info("webhook from %s refused: %s (%s)", source, exc.reason, exc)
        return _reply(exc.status, exc.reason, str(exc))

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["source"]
        parent = propagate.extract(dict(request.headers))
        with tracer.start_as_current_span(
            "webhook.intake",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"webhook.source": name, "http.request.method": "POST"},
        ) as span:
            try:
                return await self._handle(request, name, span)
            except Rejected as exc:
                return self._reject(span, exc, name)

    async def _handle(self, request: web.Request, name: str, span: trace.Span) -> web.Response:
        source = self.settings.source(name)
        if source is None:
            raise Rejected(404, "unknown_source", f"no webhook source named {name!r}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Rejected(
                413, "too_large", f"body exceeds {self.settings.max_body_bytes} bytes"
            ) from None
        with tracer.start_as_current_span("webhook.verify") as verify_span:
            try:
                verified = verify(
                    source,
                    request.headers,
                    body,
                    now_s=self.wall(),
                    tolerance_s=self.settings.tolerance_s,
                    hmac_header=self.settings.hmac_header,
                )
            except Rejected as exc:
                verify_span.set_attribute("webhook.verified", False)
                verify_span.set_attribute("webhook.reason", exc.reason)
                raise
            verify_span.set_attribute("webhook.verified", True)
        if request.content_type == "application/json":
            try:
                json.loads(body)
            except ValueError:
                raise Rejected(400, "malformed", "body is not valid JSON") from None
        span.set_attribute("webhook.event_id", verified.event_id)
        span.set_attribute("webhook.event_type", verified.event_type)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        event = store_pb.StoredEvent(
            source=name,
            event_id=verified.event_id,
            event_type=verified.event_type,
            body=body,
            headers={h: request.headers[h] for h in KEPT_HEADERS if h in request.headers},
            traceparent=carrier.get("traceparent", ""),
        )
        event.receive_time.GetCurrentTime()
        try:
            reply = await self.store.StoreEvent(
                store_pb.StoreEventRequest(event=event), timeout=self.settings.store_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            self.stats.store_failures += 1
            span.set_attribute("webhook.stored", False)
            logger.warning("webhook %s/%s not stored: %s", name, verified.event_id, exc.code().name)
            response = _reply(503, "store_unavailable", "the event could not be stored; retry")
            response.headers["Retry-After"] = "1"
            return response
        span.set_attribute("webhook.duplicate", reply.duplicate)
        if reply.duplicate:
            self.stats.duplicates += 1
            return web.json_response({"status": "duplicate", "id": verified.event_id})
        self.stats.accepted += 1
        self.wakeup.notify()
        return web.json_response({"status": "accepted", "id": verified.event_id})
