"""Alerting in a real monitor on real sockets: WatchAlerts, GetStatus, /metrics and the webhook
sent through a real api_service to a local HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import aiohttp
import grpc
import pytest
from aiohttp import web
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2
from prometheus_client.parser import text_string_to_metric_families

from api_service import ApiApp
from monitor.app import MonitorApp
from monitor.default_rules import DEFAULT_RULES
from monitor.rules import AlertRule
from monitor.settings import MonitorSettings
from paca_runtime.settings import RuntimeSettings
from tests.conftest import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

Metric = monitor_types_pb2.Metric
FIRING = monitor_types_pb2.ALERT_STATE_FIRING
RESOLVED = monitor_types_pb2.ALERT_STATE_RESOLVED
DOWN_AFTER_S = 120.0
QUEUE_DEPTH = AlertRule(
    name="QueueDeep",
    metric="queue_depth",
    threshold=10,
    for_s=30,
    summary="$service $instance queue at $value",
)
RULES = (QUEUE_DEPTH, *DEFAULT_RULES)
SECRET_PATH = "/hooks/s3cr3tT0ken"


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Monitor:
    app: MonitorApp
    clock: FakeClock
    stub: monitor_service_pb2_grpc.MonitorServiceAsyncStub
    http_address: str


@contextlib.asynccontextmanager
async def running_monitor(**settings: object) -> AsyncIterator[Monitor]:
    clock = FakeClock()
    config = MonitorSettings(
        listen_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        # The sampler's own evaluations wait this long; the tests evaluate when they mean to.
        sample_interval_s=60.0,
        down_after_s=DOWN_AFTER_S,
        rules=RULES,
        **settings,  # type: ignore[arg-type]
    )
    app = MonitorApp(config, RuntimeSettings(shutdown_grace_s=1.0), clock=clock)
    addresses = await app.start()
    try:
        async with grpc.aio.insecure_channel(addresses["grpc"]) as channel:
            yield Monitor(
                app=app,
                clock=clock,
                # grpc ships no type hints, so the stub's aio overload must be named.
                stub=cast(
                    "monitor_service_pb2_grpc.MonitorServiceAsyncStub",
                    monitor_service_pb2_grpc.MonitorServiceStub(channel),
                ),
                http_address=addresses["http"],
            )
    finally:
        await app.stop()


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    async with running_monitor() as running:
        yield running


def report(depth: float, *, instance: str = "host:1") -> monitor_service_pb2.ReportRequest:
    return monitor_service_pb2.ReportRequest(
        service="api_service",
        instance=instance,
        pid=os.getpid(),
        metrics=[Metric(name="queue_depth", gauge=depth)],
    )


async def watch(
    monitor: Monitor, **request: object
) -> grpc.aio.UnaryStreamCall[
    monitor_service_pb2.WatchAlertsRequest, monitor_service_pb2.WatchAlertsResponse
]:
    call = monitor.stub.WatchAlerts(monitor_service_pb2.WatchAlertsRequest(**request))  # type: ignore[arg-type]
    await call.initial_metadata()  # the watch is in place from here on
    return call


async def next_alert(
    call: grpc.aio.UnaryStreamCall[
        monitor_service_pb2.WatchAlertsRequest, monitor_service_pb2.WatchAlertsResponse
    ],
) -> monitor_types_pb2.Alert:
    async with asyncio.timeout(10):
        message = await call.read()
    assert isinstance(message, monitor_service_pb2.WatchAlertsResponse)
    return message.alert


async def test_watch_alerts_streams_firing_after_for_duration_then_resolved(
    monitor: Monitor,
) -> None:
    call = await watch(monitor)
    await monitor.stub.Report(report(50))

    assert monitor.app.alerting.evaluate() == []  # pending for 30 s first
    monitor.clock.now += 30
    monitor.app.alerting.evaluate()
    fired = await next_alert(call)
    status = await monitor.stub.GetStatus(monitor_service_pb2.GetStatusRequest())
    await monitor.stub.Report(report(3))
    monitor.app.alerting.evaluate()
    resolved = await next_alert(call)

    assert (fired.rule, fired.state, fired.value) == ("QueueDeep", FIRING, 50)
    assert fired.summary == "api_service host:1 queue at 50"
    assert fired.severity == monitor_types_pb2.SEVERITY_WARNING
    assert [a.id for a in status.active_alerts] == [fired.id]
    assert (resolved.id, resolved.state, resolved.value) == (fired.id, RESOLVED, 3)
    call.cancel()


async def test_silent_service_fires_the_default_critical_service_down_alert(
    monitor: Monitor,
) -> None:
    critical = await watch(monitor, min_severity=monitor_types_pb2.SEVERITY_CRITICAL)
    await monitor.stub.Report(report(50))
    monitor.app.alerting.evaluate()  # QueueDeep pending: a warning, filtered out anyway

    monitor.clock.now += DOWN_AFTER_S + 1
    monitor.app.alerting.evaluate()
    down = await next_alert(critical)

    assert (down.rule, down.state) == ("ServiceDown", FIRING)
    assert down.severity == monitor_types_pb2.SEVERITY_CRITICAL
    assert down.labels["instance"] == "host:1"
    assert down.summary == "api_service host:1 stopped reporting without shutting down"
    critical.cancel()


async def test_include_active_starts_the_stream_with_what_is_firing(monitor: Monitor) -> None:
    await monitor.stub.Report(report(50))
    monitor.app.alerting.evaluate()
    monitor.clock.now += 30
    [fired] = monitor.app.alerting.evaluate()

    call = await watch(monitor, include_active=True)

    assert (await next_alert(call)).id == fired.id
    call.cancel()


async def test_watch_alerts_ends_cleanly_when_the_monitor_stops() -> None:
    async with running_monitor() as running:
        call = await watch(running)
        await running.app.stop()

        async with asyncio.timeout(5):
            assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_metrics_expose_alert_counts_and_service_state(monitor: Monitor) -> None:
    await monitor.stub.Report(report(50))
    monitor.clock.now += 1
    monitor.app.alerting.evaluate()

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{monitor.http_address}/metrics") as response,
    ):
        text = await response.text()
    exposed = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    instance = {("service", "api_service"), ("instance", "host:1")}
    assert exposed[("paca_alerts", frozenset({("state", "pending"), ("severity", "warning")}))] == 1
    assert exposed[("paca_service_state", frozenset({*instance, ("state", "up")}))] == 1
    assert exposed[("paca_service_state", frozenset({*instance, ("state", "down")}))] == 0
    assert exposed[("paca_alert_evaluations_total", frozenset())] >= 1
    assert 0 <= exposed[("paca_host_cpu_usage_percent", frozenset())] <= 100
    assert 0 < exposed[("paca_host_memory_used_percent", frozenset())] < 100


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint standing in for a chat or paging webhook."""

    url: str = ""
    received: asyncio.Queue[tuple[dict[str, str], dict[str, object]]] = field(
        default_factory=asyncio.Queue
    )


RECEIVER = web.AppKey("receiver", WebhookReceiver)


async def _receive(request: web.Request) -> web.Response:
    request.app[RECEIVER].received.put_nowait((dict(request.headers), await request.json()))
    return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    state = WebhookReceiver()
    app = web.Application()
    app[RECEIVER] = state
    app.router.add_post(SECRET_PATH, _receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}{SECRET_PATH}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_alert_changes_reach_the_webhook_through_api_service(
    api_app: ApiApp, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_monitor(
        alert_webhook_url=receiver.url, api_address=api_app.server.bound_address
    ) as monitor:
        await monitor.stub.Report(report(50))
        monitor.app.alerting.evaluate()
        monitor.clock.now += 30
        [fired] = monitor.app.alerting.evaluate()
        async with asyncio.timeout(10):
            headers, body = await receiver.received.get()
        await monitor.stub.Report(report(1))
        monitor.app.alerting.evaluate()
        async with asyncio.timeout(10):
            _, resolved = await receiver.received.get()
            await monitor.app.alerting.webhook.wait_idle()  # type: ignore[union-attr]

    assert headers["Content-Type"].startswith("application/json")
    assert headers["Idempotency-Key"].startswith(f"{fired.id}-ALERT_STATE_FIRING-")
    assert body["id"] == fired.id
    assert body["rule"] == "QueueDeep"
    assert body["state"] == "ALERT_STATE_FIRING"
    assert body["severity"] == "SEVERITY_WARNING"
    assert body["labels"] == {"service": "api_service", "instance": "host:1"}
    assert (resolved["id"], resolved["state"]) == (fired.id, "ALERT_STATE_RESOLVED")
    webhook = monitor.app.alerting.webhook
    assert webhook is not None
    assert (webhook.sent, webhook.failed, webhook.dropped) == (2, 0, 0)
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(monitor.app)


async def test_absent_api_service_never_blocks_evaluation_and_the_change_is_kept_for_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        closed_port = placeholder.getsockname()[1]  # nothing listens once it is closed
    async with running_monitor(
        alert_webhook_url=f"http://127.0.0.1:9{SECRET_PATH}",
        api_address=f"127.0.0.1:{closed_port}",
    ) as monitor:
        webhook = monitor.app.alerting.webhook
        assert webhook is not None
        webhook.retry_initial_s = 0.01
        call = await watch(monitor)
        await monitor.stub.Report(report(50))
        monitor.app.alerting.evaluate()
        monitor.clock.now += 30

        fired = monitor.app.alerting.evaluate()  # returns at once: delivery is queued
        streamed = await next_alert(call)
        await eventually(lambda: webhook.retries >= 2)

        assert [a.id for a in fired] == [streamed.id]
        assert webhook.queued == 1  # kept at the head, retried, not lost
        assert (webhook.sent, webhook.failed, webhook.dropped) == (0, 0, 0)
        call.cancel()
    assert webhook.dropped == 1  # counted when the monitor stopped with it still unsent
    assert "s3cr3t" not in caplog.text
