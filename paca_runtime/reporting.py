"""Pushes a service's figures to the monitor sidecar.

A monitor that is down or slow never slows the service: each report has a short timeout, a
failed one is dropped and counted (``reports_dropped``), and nothing queues up in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable

import grpc
from google.protobuf import timestamp_pb2
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2

from paca_runtime.channels import open_channel
from paca_runtime.security import SecuritySettings
from paca_runtime.settings import RuntimeSettings

logger = logging.getLogger(__name__)

FiguresFn = Callable[[], Iterable[monitor_types_pb2.Metric]]


def counter(name: str, value: float, **labels: str) -> monitor_types_pb2.Metric:
    """A running-total figure."""
    return monitor_types_pb2.Metric(name=name, counter=value, labels=labels)


def gauge(name: str, value: float, **labels: str) -> monitor_types_pb2.Metric:
    """A level figure."""
    return monitor_types_pb2.Metric(name=name, gauge=value, labels=labels)


class MonitorReporter:
    """Reports on an interval while running, and once more, marked final, on ``aclose``.

    Args:
        service: Service name, e.g. "api_service".
        address: The gRPC address the service serves on, shown by the monitor.
        monitor_address: ``host:port`` of the monitor; empty disables reporting.
        interval_s: Seconds between reports (MONITOR_INTERVAL).
        figures: Returns the service's current figures; called once per report.
        timeout_s: Time limit of one report.
        security: TLS and the service token for the channel to the monitor.
    """

    def __init__(
        self,
        *,
        service: str,
        address: str,
        monitor_address: str,
        interval_s: float,
        figures: FiguresFn,
        timeout_s: float = 1.0,
        security: SecuritySettings | None = None,
    ) -> None:
        self.service = service
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.address = address
        self.monitor_address = monitor_address
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.reports_sent = 0
        self.reports_dropped = 0
        self._figures = figures
        self._security = security or SecuritySettings()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: monitor_service_pb2_grpc.MonitorServiceStub | None = None

    @classmethod
    def for_service(
        cls, service: str, address: str, runtime: RuntimeSettings, figures: FiguresFn
    ) -> MonitorReporter:
        """A reporter set up from the process's runtime settings (monitor, interval, security)."""
        return cls(
            service=service,
            address=address,
            monitor_address=runtime.monitor_address,
            interval_s=runtime.report_interval_s,
            figures=figures,
            security=runtime.security,
        )

    def __repr__(self) -> str:
        return (
            f"<MonitorReporter {self.service} monitor={self.monitor_address or 'off'} "
            f"sent={self.reports_sent} dropped={self.reports_dropped}>"
        )

    def start(self) -> None:
        """Begin reporting in the background; the first report goes out at once."""
        if not self.monitor_address or self._task is not None:
            return
        self._channel = open_channel(self.monitor_address, self._security)
        self._stub = monitor_service_pb2_grpc.MonitorServiceStub(self._channel)
        self._task = asyncio.create_task(self._loop(), name=f"{self.service}-reporter")

    async def aclose(self) -> None:
        """Stop the loop, send the final report, close the channel. Idempotent."""
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None
        await self.report(final=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def report(self, *, final: bool = False) -> bool:
        """Send one report now; False when it was dropped."""
        if self._stub is None:
            return False
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        try:
            request = monitor_service_pb2.ReportRequest(
                service=self.service,
                instance=self.instance,
                pid=os.getpid(),
                address=self.address,
                report_time=now,
                metrics=[
                    *self._figures(),
                    monitor_types_pb2.Metric(name="reports_dropped", counter=self.reports_dropped),
                ],
                final=final,
            )
            await self._stub.Report(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self.reports_dropped += 1
            log = logger.warning if self.reports_dropped == 1 else logger.debug
            log("report to monitor %s dropped: %s", self.monitor_address, exc.code().name)
            return False
        self.reports_sent += 1
        return True

    async def _loop(self) -> None:
        while not self._stop.is_set():
            await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
