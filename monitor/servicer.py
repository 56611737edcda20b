"""gRPC adapter of the monitor: maps MonitorService messages onto the registry and the sampler.

Errors raised by the engine (``InvalidArgument`` from report validation) become statuses with
google.rpc details through :func:`~paca_runtime.errors.translate_errors`.
"""

from __future__ import annotations

import grpc
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2

from monitor.registry import InstanceStatus, ServiceRegistry
from monitor.sampler import Sampler
from paca_runtime.errors import translate_errors

SERVICE_NAME = monitor_service_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name


class MonitorServicer(monitor_service_pb2_grpc.MonitorServiceServicer):
    """Serves ``paca.monitor.v1.MonitorService``.

    Args:
        registry: Receives reports and judges liveness.
        sampler: Holds the latest host and process figures.
        report_interval_s: The interval services are asked to report at.
    """

    def __init__(
        self, registry: ServiceRegistry, sampler: Sampler, report_interval_s: float
    ) -> None:
        self._registry = registry
        self._sampler = sampler
        self._report_interval_s = report_interval_s

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
        return response

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
