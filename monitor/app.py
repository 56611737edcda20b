"""The monitor process: report intake over gRPC, host sampling, ``/metrics`` and status page.

Start order is sampler, gRPC, HTTP, so the first report and the first scrape already find host
figures. Stop order is the reverse of what feeds on what: the sampler first, then HTTP, then
gRPC last with the shutdown grace, so final reports of services stopping alongside still land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from paca.monitor.v1 import monitor_service_pb2_grpc

from monitor.collector import HostCollector
from monitor.exposition import ExpositionServer
from monitor.registry import ServiceRegistry
from monitor.sampler import Sampler
from monitor.servicer import SERVICE_NAME, MonitorServicer
from monitor.settings import MonitorSettings
from paca_runtime.server import GrpcServer
from paca_runtime.settings import RuntimeSettings, SettingsSource

logger = logging.getLogger(__name__)


class MonitorApp:
    """The monitor sidecar as a :class:`paca_runtime.Service`: started once, stopped once.

    Args:
        settings: Addresses, interval and liveness grace.
        runtime: The process's shared settings (shutdown grace).
        clock: Monotonic seconds for liveness and rates.
        collector_factory: Makes the host collector (on the sampling thread); the default
            samples this host with ``clock``.
    """

    name = "monitor"

    def __init__(
        self,
        settings: MonitorSettings,
        runtime: RuntimeSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        collector_factory: Callable[[], HostCollector] | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.registry = ServiceRegistry(settings.down_after_s, clock=clock)
        self.sampler = Sampler(
            self.registry,
            settings.sample_interval_s,
            collector_factory or (lambda: HostCollector(clock=clock)),
        )
        self.grpc = GrpcServer(self.name, settings.listen_address)
        self.grpc.add_service(
            SERVICE_NAME,
            lambda server: monitor_service_pb2_grpc.add_MonitorServiceServicer_to_server(
                MonitorServicer(self.registry, self.sampler, settings.sample_interval_s), server
            ),
        )
        self.http = ExpositionServer(
            settings.metrics_address, self.registry, self.sampler, settings.sample_interval_s
        )
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"<MonitorApp grpc={self.grpc!r} http={self.http!r} {self.registry!r}>"

    async def start(self) -> dict[str, str]:
        """Serve; returns the bound addresses ``{"grpc": ..., "http": ...}``. Call once.

        On failure, what was started stays up until :meth:`stop`.
        """
        if self._started:
            raise RuntimeError("MonitorApp.start() may be called once")
        self._started = True
        await self.sampler.start()
        await self.grpc.start()
        await self.http.start()
        return {"grpc": self.grpc.bound_address, "http": self.http.bound_address}

    async def stop(self) -> None:
        """Stop sampling, HTTP, then gRPC within the shutdown grace. Idempotent."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        await self.sampler.aclose()
        await self.http.aclose()
        if self.grpc.port:
            await self.grpc.stop(self.runtime.shutdown_grace_s)


def build(source: SettingsSource, runtime: RuntimeSettings) -> MonitorApp:
    """Make the monitor from its settings (the ``build`` of :func:`paca_runtime.run`)."""
    return MonitorApp(MonitorSettings.from_source(source, runtime), runtime)
