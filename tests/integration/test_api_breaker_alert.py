"""An endpoint's open breaker reaches the monitor as ``api_breaker_open`` and fires the default
BreakerOpen alert; closing it resolves the alert. api_service reports over its real reporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.monitor.v1 import monitor_service_pb2, monitor_types_pb2

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.resilience import BreakerState, Guards
from api_service.settings import ResilienceSettings
from paca_runtime.settings import RuntimeSettings
from tests.conftest import Upstream
from tests.integration.test_monitor_alerts import (
    FIRING,
    RESOLVED,
    FakeClock,
    Monitor,
    running_monitor,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ENDPOINT = "flaky.alerting"


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    async with running_monitor() as running:
        yield running


@pytest.fixture
async def reporting_api(monitor: Monitor, tmp_path: Path) -> AsyncIterator[ApiApp]:
    runtime = RuntimeSettings(
        monitor_address=monitor.app.grpc.bound_address,
        report_interval_s=0.05,
        state_dir=tmp_path,
        shutdown_grace_s=1.0,
    )
    settings = ApiSettings(
        listen="127.0.0.1:0",
        calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool"),
    )
    app = ApiApp(settings, runtime)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def breaker_figure(monitor: Monitor) -> float | None:
    status = await monitor.stub.GetStatus(monitor_service_pb2.GetStatusRequest(), timeout=5)
    for service in status.services:
        for metric in service.metrics:
            if metric.name == "api_breaker_open" and metric.labels.get("endpoint") == ENDPOINT:
                return float(metric.gauge)
    return None


async def until_figure(monitor: Monitor, value: float) -> None:
    """Wait for the report that carries ``value`` (reports arrive every 50 ms)."""
    async with asyncio.timeout(10):
        # Another component's interval: there is no event to await here.
        while await breaker_figure(monitor) != value:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_open_breaker_is_reported_and_fires_then_resolves_breaker_open(
    monitor: Monitor, reporting_api: ApiApp, upstream: Upstream
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name=ENDPOINT,
        provider="flaky",
        base_url=upstream.url,
        path="/flaky/alerting",
        retry=api_types_pb2.RetryPolicy(max_attempts=1),
        circuit_breaker=api_types_pb2.CircuitBreakerPolicy(
            enabled=True, consecutive_failures=2, half_open_probes=1
        ),
    )
    endpoint.circuit_breaker.open_duration.FromSeconds(30)
    clock = FakeClock()
    reporting_api.caller.guards = Guards(ResilienceSettings(), clock=clock)
    async with grpc.aio.insecure_channel(reporting_api.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        await api.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
        call = api_service_pb2.CallRequest(
            endpoint=ENDPOINT, query=[api_types_pb2.QueryParam(name="fail", value="2")]
        )
        assert (await api.Call(call, timeout=5)).status_code == 503
        await until_figure(monitor, 0.0)  # reported while closed
        assert monitor.app.alerting.evaluate() == []

        assert (await api.Call(call, timeout=5)).status_code == 503
        breaker = reporting_api.caller.guards.endpoint_breaker(ENDPOINT)
        assert breaker is not None
        assert breaker.current_state() is BreakerState.OPEN
        await until_figure(monitor, 1.0)
        [fired] = monitor.app.alerting.evaluate()
        assert (fired.rule, fired.state) == ("BreakerOpen", FIRING)
        assert fired.severity == monitor_types_pb2.SEVERITY_WARNING
        assert ENDPOINT in fired.summary

        # After the open period the probe succeeds (the upstream stopped failing): closed.
        clock.now += 30
        assert (await api.Call(call, timeout=5)).status_code == 200
        assert breaker.current_state() is BreakerState.CLOSED
        await until_figure(monitor, 0.0)
        [resolved] = monitor.app.alerting.evaluate()
        assert (resolved.rule, resolved.state) == ("BreakerOpen", RESOLVED)
