"""Webhooks through the real processes: one trace, nothing lost, exactly once per group."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from paca.api.v1 import webhook_service_pb2 as pb
from paca.api.v1 import webhook_service_pb2_grpc as pb_grpc

from api_service.webhooks import sign_standard
from paca_runtime.stack import ServiceProcess
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

KEY = b"end-to-end standard webhooks key"
WEBHOOK_ENV = {
    "PACA_WEBHOOK_LISTEN": "127.0.0.1:0",
    "PACA_WEBHOOK_SOURCES": "acme:standard",
    "PACA_WEBHOOK_SECRET_ACME": "whsec_" + base64.b64encode(KEY).decode(),
    "PACA_WEBHOOK_POLL_INTERVAL_S": "0.05",
}


async def start_api(stack: Stack, **env: str) -> ServiceProcess:
    """An api_service with the webhook intake (the stack's default one has no sources)."""
    if "api_service" in stack.processes:
        await stack.processes["api_service"].stop()
    return await stack.start("api_service", **{**WEBHOOK_ENV, **env})


async def post(http: aiohttp.ClientSession, api: ServiceProcess, msg_id: str) -> int:
    body = b'{"type": "order.created", "id": "%s"}' % msg_id.encode()
    ts = int(time.time())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(KEY, msg_id, ts, body),
        "Content-Type": "application/json",
    }
    url = f"http://{api.addresses['webhook']}/webhooks/acme"
    async with http.post(url, data=body, headers=headers) as response:
        return response.status


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def consume(
    address: str,
    group: str,
    seen: Counter[str],
    until: int,
    attempts: Counter[int] | None = None,
    done: asyncio.Event | None = None,
) -> None:
    """Ack every event of ``group`` until ``seen`` holds ``until`` distinct ids, then set
    ``done`` (consumers of one group share ``seen``)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.WebhookServiceStub(channel)
        call = stub.Subscribe(pb.SubscribeRequest(group=group))
        try:
            async for reply in call:
                event = reply.event
                seen[event.event_id] += 1
                if attempts is not None:
                    attempts[event.attempt] += 1
                await stub.AckEvent(pb.AckEventRequest(group=group, ack_id=event.ack_id))
                if len(seen) >= until:
                    if done is not None:
                        done.set()
                    return
        finally:
            call.cancel()


async def test_intake_verify_store_and_delivery_are_spans_of_one_trace(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    api = await start_api(stack)
    assert await post(http, api, "traced-1") == 200
    seen: Counter[str] = Counter()
    await asyncio.wait_for(consume(api.addresses["grpc"], "audit", seen, 1), 10)

    def intake_trace(spans: list[tuple[str, trace_pb2.Span]]) -> bytes | None:
        for _, span in spans:
            attrs = {a.key: a.value.string_value for a in span.attributes}
            if span.name == "webhook.intake" and attrs.get("webhook.event_id") == "traced-1":
                return bytes(span.trace_id)
        return None

    def complete(spans: list[tuple[str, trace_pb2.Span]]) -> bool:
        trace_id = intake_trace(spans)
        names = {(svc, s.name) for svc, s in spans if s.trace_id == trace_id}
        return (
            trace_id is not None
            and {
                ("api_service", "webhook.verify"),
                ("api_service", "webhook.deliver"),
                ("db_service", "/paca.db.v1.EventStoreService/StoreEvent"),
            }
            <= names
        )

    await stack.receiver.wait_for(complete, 15)
    root = next(s for _, s in stack.receiver.spans if s.name == "webhook.intake")
    assert root.parent_span_id == b""  # the trace starts at the HTTP request


async def test_api_service_killed_between_intake_and_delivery_loses_nothing(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    first = await start_api(stack, PACA_WEBHOOK_VISIBILITY_TIMEOUT_S="1")
    ids = [f"restart-{n}" for n in range(20)]
    assert [await post(http, first, i) for i in ids] == [200] * 20
    # A subscriber takes a few events and never acks them; then the replica dies hard.
    async with grpc.aio.insecure_channel(first.addresses["grpc"]) as channel:
        call = pb_grpc.WebhookServiceStub(channel).Subscribe(pb.SubscribeRequest(group="ship"))
        taken = [(await call.read()).event.event_id for _ in range(3)]
        first.kill()
        await first.wait()
    second = await stack.start("api_service", **WEBHOOK_ENV, PACA_WEBHOOK_VISIBILITY_TIMEOUT_S="1")
    seen: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    await asyncio.wait_for(consume(second.addresses["grpc"], "ship", seen, 20, attempts), 20)
    assert set(seen) == set(ids)
    assert set(seen.values()) == {1}
    # The dead replica had leased a whole claim batch (16), read or not: those come back after
    # the visibility timeout as second attempts, the rest as first ones.
    assert sum(attempts.values()) == 20
    assert attempts[2] >= len(taken) == 3


@pytest.mark.timeout(120)
async def test_1000_events_from_10_senders_reach_every_group_exactly_once(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    first = await start_api(stack)
    # Not through stack.start: the stack tracks one process per module and stops only that one.
    second = ServiceProcess("api_service", {**stack.env, **WEBHOOK_ENV})
    await second.start()
    try:
        await deliver_1000([first, second], http)
    finally:
        await second.stop()


async def deliver_1000(replicas: list[ServiceProcess], http: aiohttp.ClientSession) -> None:
    ids = [f"bulk-{n}" for n in range(1000)]

    async def sender(k: int) -> list[int]:
        statuses = []
        for n, msg_id in enumerate(ids[k::10]):
            statuses.append(await post(http, replicas[(k + n) % 2], msg_id))
        # Senders retry: a tenth of the ids again, on the other replica (stored once).
        for n, msg_id in enumerate(ids[k::100]):
            statuses.append(await post(http, replicas[(k + n + 1) % 2], msg_id))
        return statuses

    seen = {"billing": Counter[str](), "search": Counter[str]()}
    done = {group: asyncio.Event() for group in seen}
    consumers = [
        asyncio.create_task(
            consume(r.addresses["grpc"], group, seen[group], 1000, done=done[group])
        )
        for group in seen
        for r in replicas
    ]
    started = time.perf_counter()
    results = await asyncio.gather(*(sender(k) for k in range(10)))
    intake_s = time.perf_counter() - started
    assert Counter(s for statuses in results for s in statuses) == Counter({200: 1100})
    async with asyncio.timeout(60):
        for event in done.values():
            await event.wait()
    delivered_s = time.perf_counter() - started
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    for group, counts in seen.items():
        assert set(counts) == set(ids), group
        assert set(counts.values()) == {1}, group
    print(f"1000 webhooks: intake {intake_s:.2f} s, all delivered to 2 groups {delivered_s:.2f} s")
