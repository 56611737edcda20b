"""The monitor in-process on real sockets: reports over gRPC, status, /metrics, health."""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import aiohttp
import grpc
import psutil
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2
from prometheus_client.parser import text_string_to_metric_families

from monitor.app import MonitorApp
from monitor.settings import MonitorSettings
from paca_runtime.reporting import MonitorReporter, counter
from paca_runtime.settings import RuntimeSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

Metric = monitor_types_pb2.Metric
DOWN_AFTER_S = 3.0


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
    channel: grpc.aio.Channel
    grpc_address: str
    http_address: str


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    clock = FakeClock()
    settings = MonitorSettings(
        listen_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        sample_interval_s=1.0,
        down_after_s=DOWN_AFTER_S,
    )
    app = MonitorApp(settings, RuntimeSettings(shutdown_grace_s=1.0), clock=clock)
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
                channel=channel,
                grpc_address=addresses["grpc"],
                http_address=addresses["http"],
            )
    finally:
        await app.stop()


def report(**overrides: object) -> monitor_service_pb2.ReportRequest:
    fields: dict[str, object] = {
        "service": "api_service",
        "instance": "host:1",
        "pid": os.getpid(),
        "address": "127.0.0.1:50051",
        "metrics": [
            Metric(name="calls_total", counter=5, labels={"endpoint": "geo"}),
            Metric(name="pool_in_use", gauge=2),
            Metric(
                name="latency_seconds",
                histogram=monitor_types_pb2.Histogram(bounds=[0.1], counts=[3, 1], sum=0.7),
            ),
        ],
    }
    fields.update(overrides)
    return monitor_service_pb2.ReportRequest(**fields)  # type: ignore[arg-type]


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_addresses_are_the_bound_ports(monitor: Monitor) -> None:
    for address in (monitor.grpc_address, monitor.http_address):
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0


async def test_report_shows_instance_up_with_metrics_process_and_host_figures(
    monitor: Monitor,
) -> None:
    sent = report()

    response = await monitor.stub.Report(sent)
    status = await monitor.stub.GetStatus(monitor_service_pb2.GetStatusRequest())

    assert response.report_interval_seconds == 1.0
    [service] = status.services
    assert (service.service, service.instance) == ("api_service", "host:1")
    assert service.state == monitor_types_pb2.SERVICE_STATE_UP
    assert service.address == "127.0.0.1:50051"
    assert list(service.metrics) == list(sent.metrics)
    assert service.last_report_time.seconds > 0
    assert service.process.pid == os.getpid()
    assert service.process.rss_bytes > 0
    assert service.process.threads >= 1
    assert len(status.host.cpu_percent_per_core) == psutil.cpu_count()
    assert status.host.memory_total_bytes > 0
    assert status.host.HasField("sample_time")
    # Host rules depend on how busy this machine is; nothing the report sent may alert.
    assert [a.rule for a in status.active_alerts if not a.rule.startswith("Host")] == []


async def test_silent_instance_turns_down(monitor: Monitor) -> None:
    await monitor.stub.Report(report())

    monitor.clock.now += DOWN_AFTER_S + 0.5
    status = await monitor.stub.GetStatus(monitor_service_pb2.GetStatusRequest())

    assert status.services[0].state == monitor_types_pb2.SERVICE_STATE_DOWN


async def test_bad_report_is_invalid_argument_naming_the_field_and_changes_nothing(
    monitor: Monitor,
) -> None:
    bad = report(metrics=[Metric(name="ok", gauge=1), Metric(name="1bad", gauge=1)])

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await monitor.stub.Report(bad)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["metrics[1].name"]
    after = await monitor.stub.GetStatus(monitor_service_pb2.GetStatusRequest())
    assert list(after.services) == []


async def test_metrics_endpoint_exposes_reported_and_host_figures(monitor: Monitor) -> None:
    await monitor.stub.Report(report())

    exposed = samples(await get(f"http://{monitor.http_address}/metrics"))

    instance = {("service", "api_service"), ("instance", "host:1")}
    assert exposed[("calls_total", frozenset({*instance, ("endpoint", "geo")}))] == 5
    assert exposed[("pool_in_use", frozenset(instance))] == 2
    assert exposed[("latency_seconds_bucket", frozenset({*instance, ("le", "0.1")}))] == 3
    assert exposed[("latency_seconds_bucket", frozenset({*instance, ("le", "+Inf")}))] == 4
    assert exposed[("paca_service_up", frozenset(instance))] == 1
    cores = [key for key in exposed if key[0] == "paca_host_cpu_percent"]
    assert len(cores) == psutil.cpu_count()
    assert exposed[("paca_host_memory_total_bytes", frozenset())] > 0


async def test_status_json_lists_instances_with_state_and_follows_changes(
    monitor: Monitor,
) -> None:
    await monitor.stub.Report(report())
    await monitor.app.sampler.refresh()

    first = json.loads(await get(f"http://{monitor.http_address}/api/status"))
    monitor.clock.now += DOWN_AFTER_S + 0.5
    second = json.loads(await get(f"http://{monitor.http_address}/api/status"))
    page = await get(f"http://{monitor.http_address}/")

    [service] = first["services"]
    assert (service["service"], service["instance"], service["state"]) == (
        "api_service",
        "host:1",
        "UP",
    )
    assert service["pid"] == os.getpid()
    assert service["rss_bytes"] > 0
    assert first["host"]["cores"] == psutil.cpu_count()
    assert second["services"][0]["state"] == "DOWN"
    assert "const REFRESH_MS = 1000;" in page


async def test_health_check_reports_serving(monitor: Monitor) -> None:
    health = health_pb2_grpc.HealthStub(monitor.channel)

    for service in ("", "paca.monitor.v1.MonitorService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reporter_that_closes_leaves_instance_stopped(monitor: Monitor) -> None:
    reporter = MonitorReporter(
        service="db_service",
        address="127.0.0.1:50052",
        monitor_address=monitor.grpc_address,
        interval_s=60.0,
        figures=lambda: [counter("queries_total", 1)],
    )
    reporter.start()

    await reporter.aclose()
    status = await monitor.stub.GetStatus(monitor_service_pb2.GetStatusRequest())

    assert reporter.reports_dropped == 0
    [service] = status.services
    assert service.service == "db_service"
    assert service.state == monitor_types_pb2.SERVICE_STATE_STOPPED


async def test_start_fails_on_a_taken_http_port_and_stop_still_cleans_up() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        settings = MonitorSettings(
            listen_address="127.0.0.1:0",
            metrics_address=f"127.0.0.1:{taken.getsockname()[1]}",
            sample_interval_s=1.0,
            down_after_s=DOWN_AFTER_S,
        )
        app = MonitorApp(settings, RuntimeSettings(shutdown_grace_s=1.0))

        in_use = f"(?i){os.strerror(errno.EADDRINUSE)}"  # asyncio lower-cases it
        with pytest.raises(OSError, match=in_use) as caught:
            await app.start()
        assert caught.value.errno == errno.EADDRINUSE
        await app.stop()
        await app.stop()
