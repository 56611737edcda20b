"""Webhook intake and delivery in-process on real sockets: HTTP in, db_service store, gRPC out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from paca.api.v1 import webhook_service_pb2 as pb
from paca.api.v1 import webhook_service_pb2_grpc as pb_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.webhooks import WebhookSettings, WebhookSource, sign_standard
from db_service import DbApp
from tests.integration.conftest import runtime_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

KEY = b"standard webhooks key for tests!"
ROTATED = b"the key the sender rotates to..."
GH_KEY = b"github secret"


def webhook_settings(**overrides: object) -> WebhookSettings:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "sources": (
            WebhookSource("acme", "standard", (KEY, ROTATED)),
            WebhookSource("gh", "github", (GH_KEY,)),
        ),
        "max_body_bytes": 4096,
        "visibility_timeout_s": 30.0,
        "max_attempts": 3,
        "poll_interval_s": 0.05,
        "store_timeout_s": 2.0,
    }
    values.update(overrides)
    return WebhookSettings(**values)  # type: ignore[arg-type]


async def start_api(tmp_path: Path, db_address: str, settings: WebhookSettings) -> ApiApp:
    api = ApiApp(
        ApiSettings(
            listen="127.0.0.1:0",
            db_address=db_address,
            calllog=CallLogSettings(spool_dir=tmp_path / "spool"),
        ),
        runtime_settings(tmp_path),
        settings,
    )
    return api


class Harness:
    def __init__(self, api: ApiApp, addresses: dict[str, str], http: aiohttp.ClientSession):
        self.api = api
        self.base = f"http://{addresses['webhook']}/webhooks"
        self.http = http
        self.channel = grpc.aio.insecure_channel(addresses["grpc"])
        self.stub = pb_grpc.WebhookServiceStub(self.channel)

    async def post_standard(
        self, msg_id: str, body: bytes, *, key: bytes = KEY, timestamp: int | None = None
    ) -> tuple[int, dict[str, str]]:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_standard(key, msg_id, ts, body),
            "Content-Type": "application/json",
        }
        async with self.http.post(f"{self.base}/acme", data=body, headers=headers) as response:
            return response.status, await response.json()

    async def stats(self, group: str = "") -> pb.GetWebhookStatsResponse:
        reply: pb.GetWebhookStatsResponse = await self.stub.GetWebhookStats(
            pb.GetWebhookStatsRequest(group=group)
        )
        return reply


@pytest.fixture
async def harness(db_app: DbApp, tmp_path: Path) -> AsyncIterator[Harness]:
    api = await start_api(tmp_path, db_app.server.bound_address, webhook_settings())
    addresses = await api.start()
    try:
        async with aiohttp.ClientSession() as http:
            h = Harness(api, addresses, http)
            yield h
            await h.channel.close()
    finally:
        await api.stop()


async def next_event(
    call: grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse],
    timeout_s: float = 10,
) -> pb.DeliveredEvent:
    async with asyncio.timeout(timeout_s):
        reply = await call.read()
    assert isinstance(reply, pb.SubscribeResponse)
    return reply.event


async def test_start_returns_the_bound_webhook_address(harness: Harness) -> None:
    host, _, port = harness.base.removeprefix("http://").partition("/")[0].rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0


async def test_signed_webhook_is_stored_then_delivered_and_acked(harness: Harness) -> None:
    body = b'{"type": "invoice.paid", "id": 7}'
    assert await harness.post_standard("msg-1", body) == (
        200,
        {"status": "accepted", "id": "msg-1"},
    )
    call = harness.stub.Subscribe(pb.SubscribeRequest(group="billing"))
    event = await next_event(call)
    assert (event.source, event.event_id, event.event_type) == ("acme", "msg-1", "invoice.paid")
    assert event.body == body
    assert event.attempt == 1
    assert event.headers["Content-Type"] == "application/json"
    assert "webhook-signature" not in event.headers
    ack = await harness.stub.AckEvent(pb.AckEventRequest(group="billing", ack_id=event.ack_id))
    assert ack.acked
    call.cancel()
    stats = await harness.stats("billing")
    assert (stats.accepted, stats.delivered, stats.stored_events) == (1, 1, 1)
    assert (stats.groups[0].acked, stats.groups[0].pending) == (1, 0)


async def test_rotated_secret_old_and_new_both_accepted(harness: Harness) -> None:
    assert (await harness.post_standard("old", b"{}", key=KEY))[0] == 200
    assert (await harness.post_standard("new", b"{}", key=ROTATED))[0] == 200


async def test_duplicate_id_is_answered_2xx_and_stored_once(harness: Harness) -> None:
    assert (await harness.post_standard("dup", b'{"a": 1}'))[0] == 200
    assert await harness.post_standard("dup", b'{"a": 1}') == (
        200,
        {"status": "duplicate", "id": "dup"},
    )
    stats = await harness.stats()
    assert (stats.accepted, stats.duplicates, stats.stored_events) == (1, 1, 1)


async def test_bad_requests_get_4xx_with_reason_and_store_nothing(harness: Harness) -> None:
    status, reply = await harness.post_standard("t", b'{"x": 1}', key=b"wrong key")
    assert (status, reply["error"]) == (401, "bad_signature")
    status, reply = await harness.post_standard("s", b"{}", timestamp=int(time.time()) - 301)
    assert (status, reply["error"]) == (400, "stale_timestamp")
    status, reply = await harness.post_standard("m", b"{not json")
    assert (status, reply["error"]) == (400, "malformed")
    status, reply = await harness.post_standard("big", b'{"x": "' + b"y" * 5000 + b'"}')
    assert (status, reply["error"]) == (413, "too_large")
    async with harness.http.post(f"{harness.base}/nobody", data=b"{}") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "unknown_source"
    # A tampered body: signed one way, sent another.
    ts = int(time.time())
    headers = {
        "webhook-id": "tamper",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(KEY, "tamper", ts, b'{"amount": 1}'),
    }
    async with harness.http.post(
        f"{harness.base}/acme", data=b'{"amount": 1000}', headers=headers
    ) as response:
        assert response.status == 401
    stats = await harness.stats()
    assert stats.stored_events == 0
    assert dict(stats.rejected) == {
        "bad_signature": 2,
        "stale_timestamp": 1,
        "malformed": 1,
        "too_large": 1,
        "unknown_source": 1,
    }


async def test_github_webhook_is_verified_and_typed_by_its_headers(harness: Harness) -> None:
    body = b'{"zen": "Design for failure."}'
    headers = {
        "X-Hub-Signature-256": "sha256=" + hmac.new(GH_KEY, body, hashlib.sha256).hexdigest(),
        "X-GitHub-Delivery": "gh-1",
        "X-GitHub-Event": "ping",
        "Content-Type": "application/json",
    }
    async with harness.http.post(f"{harness.base}/gh", data=body, headers=headers) as response:
        assert response.status == 200
    call = harness.stub.Subscribe(pb.SubscribeRequest(group="g", source="gh", event_type="ping"))
    event = await next_event(call)
    call.cancel()
    assert (event.event_id, event.event_type, event.headers["X-GitHub-Event"]) == (
        "gh-1",
        "ping",
        "ping",
    )


async def test_subscriber_that_disconnects_before_ack_gets_the_event_again(
    harness: Harness,
) -> None:
    await harness.post_standard("again", b"{}")
    first = harness.stub.Subscribe(pb.SubscribeRequest(group="workers"))
    event = await next_event(first)
    first.cancel()
    # The lease is released when the stream ends: no wait for the 30 s visibility timeout.
    async with grpc.aio.insecure_channel(harness.api.server.bound_address) as channel:
        stub = pb_grpc.WebhookServiceStub(channel)
        second = stub.Subscribe(pb.SubscribeRequest(group="workers"))
        again = await next_event(second)
        assert (again.event_id, again.attempt) == (event.event_id, 2)
        ack = await stub.AckEvent(pb.AckEventRequest(group="workers", ack_id=again.ack_id))
        assert ack.acked
        second.cancel()
    assert (await harness.stats()).redelivered == 1


async def test_unacked_event_is_redelivered_after_visibility_timeout_then_parked_dead(
    db_app: DbApp, tmp_path: Path
) -> None:
    settings = webhook_settings(visibility_timeout_s=0.2, max_attempts=2)
    api = await start_api(tmp_path, db_app.server.bound_address, settings)
    addresses = await api.start()
    try:
        async with aiohttp.ClientSession() as http:
            h = Harness(api, addresses, http)
            await h.post_standard("slow", b"{}")
            call = h.stub.Subscribe(pb.SubscribeRequest(group="g"))
            attempts = [(await next_event(call)).attempt, (await next_event(call)).attempt]
            assert attempts == [1, 2]
            dead_request = pb.ListDeadEventsRequest(group="g")
            async with asyncio.timeout(10):
                # The park happens on a later claim in the store: there is no event to await.
                while not (await h.stub.ListDeadEvents(dead_request)).events:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            call.cancel()
            dead = (await h.stub.ListDeadEvents(pb.ListDeadEventsRequest(group="g"))).events
            assert [(e.event_id, e.attempt) for e in dead] == [("slow", 2)]
            replayed = await h.stub.ReplayEvents(pb.ReplayEventsRequest(group="g"))
            assert replayed.replayed == 1
            call = h.stub.Subscribe(pb.SubscribeRequest(group="g"))
            assert (await next_event(call)).attempt == 1
            call.cancel()
            await h.channel.close()
    finally:
        await api.stop()


async def test_store_unreachable_answers_503_so_the_sender_retries(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_address = f"127.0.0.1:{probe.getsockname()[1]}"
    api = await start_api(tmp_path, dead_address, webhook_settings(store_timeout_s=1.0))
    addresses = await api.start()
    try:
        async with aiohttp.ClientSession() as http:
            h = Harness(api, addresses, http)
            status, reply = await h.post_standard("lost?", b"{}")
            assert (status, reply["error"]) == (503, "store_unavailable")
            assert api.webhooks is not None
            assert api.webhooks.stats.store_failures == 1
            await h.channel.close()
    finally:
        await api.stop()


async def test_secrets_and_signatures_never_reach_the_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.post_standard("log-ok", b"{}")
    await harness.post_standard("log-bad", b"{}", key=b"wrong key")
    signature = sign_standard(KEY, "log-ok", int(time.time()), b"{}").removeprefix("v1,")
    text = caplog.text + repr(harness.api.webhooks)
    for secret in (KEY.decode(), base64.b64encode(KEY).decode(), signature[:20]):
        assert secret not in text
    assert "bad_signature" in caplog.text
