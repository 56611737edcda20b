"""gRPC adapter of the monitor: maps MonitorService messages onto the registry, the sampler and
alerting.

Errors raised by the engine (``InvalidArgument`` from report validation, ``WatcherBehind``)
become statuses with google.rpc details: through :func:`~paca_runtime.errors.translate_errors`
for unary methods, through :func:`_abort` for the WatchAlerts stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from grpc_status import rpc_status
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2

from monitor.alerting import Alerting
from monitor.registry import InstanceStatus, ServiceRegistry
from monitor.sampler import Sampler
from paca_runtime.errors import InvalidArgument, StatusError, translate_errors

SERVICE_NAME = monitor_service_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name


class MonitorServicer(monitor_service_pb2_grpc.MonitorServiceServicer):
    """Serves ``paca.monitor.v1.MonitorService``.

    Args:
        registry: Receives reports and judges liveness.
        sampler: Holds the latest host and process figures.
        report_interval_s: The interval services are asked to report at.
        alerting: Active alerts and the feed of alert changes.
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        sampler: Sampler,
        report_interval_s: float,
        alerting: Alerting,
    ) -> None:
        self._registry = registry
        self._sampler = sampler
        self._report_interval_s = report_interval_s
        self._alerting = alerting

    @translate_errors
    async def Report(
        self,
        request: monitor_service_pb2.ReportRequest,
        context: grpc.aio.ServicerContext,
    ) -> monitor_service_pb2.ReportResponse:
        self._registry.record(request)
        return monitor_service_pb2.ReportResponse(report_interval_seconds=self._report_interval_s)

    @translate_errors
    async def GetStatus(
        self,
        request: monitor_service_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> monitor_service_pb2.GetStatusResponse:
        response = monitor_service_pb2.GetStatusResponse()
        for status in self._registry.statuses():
            response.services.append(await self._service_status(status))
        response.host.CopyFrom(self._sampler.host)
        response.active_alerts.extend(self._alerting.active())
        return response

    async def WatchAlerts(
        self,
        request: monitor_service_pb2.WatchAlertsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[monitor_service_pb2.WatchAlertsResponse]:
        if request.min_severity not in monitor_types_pb2.Severity.values():
            await _abort(
                context, InvalidArgument("min_severity", f"unknown value {request.min_severity}")
            )

        def wanted(alert: monitor_types_pb2.Alert) -> bool:
            return alert.severity >= request.min_severity

        # Subscribe before reading the active alerts, with no await in between: evaluation
        # runs on this loop, so no change can fall between the two or be sent twice.
        with self._alerting.feed.subscribe() as subscription:
            active = self._alerting.active() if request.include_active else []
            # Headers tell the watcher the watch is in place, before any alert is due.
            await context.send_initial_metadata(())
            for alert in active:
                if alert.state == monitor_types_pb2.ALERT_STATE_FIRING and wanted(alert):
                    yield monitor_service_pb2.WatchAlertsResponse(alert=alert)
            while True:
                try:
                    change = await subscription.next()
                except StatusError as exc:
                    await _abort(context, exc)
                if change is None:
                    return
                if wanted(change):
                    yield monitor_service_pb2.WatchAlertsResponse(alert=change)

    async def _service_status(self, status: InstanceStatus) -> monitor_types_pb2.ServiceStatus:
        record = status.record
        message = monitor_types_pb2.ServiceStatus(
            service=record.service,
            instance=record.instance,
            state=status.state,
            address=record.address,
            metrics=record.metrics,
        )
        message.last_report_time.CopyFrom(record.received_time)
        if record.pid > 0:
            figures = await self._sampler.process(record.pid)
            if figures is not None:
                message.process.CopyFrom(figures)
        return message


async def _abort(context: grpc.aio.ServicerContext, exc: StatusError) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(exc.to_status()))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
