"""The monitor process: report intake over gRPC, host sampling, alerting, ``/metrics`` and
status page.

Start order is alerting (webhook delivery), sampler, gRPC, HTTP, so the first report and the
first scrape already find host figures, and the rules are evaluated after every sample. Stop
order is the reverse of what feeds on what: the sampler first, then alerting (which ends the
WatchAlerts streams, so they do not hold up the gRPC stop), then HTTP, then gRPC last with the
shutdown grace, so final reports of services stopping alongside still land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from paca.monitor.v1 import monitor_service_pb2_grpc

from monitor.alerting import Alerting
from monitor.collector import HostCollector
from monitor.exposition import ExpositionServer, MonitorMetrics
from monitor.registry import ServiceRegistry
from monitor.sampler import Sampler
from monitor.servicer import SERVICE_NAME, MonitorServicer
from monitor.settings import MonitorSettings
from monitor.webhook import AlertWebhook
from paca_runtime.channels import open_channel
from paca_runtime.server import GrpcServer
from paca_runtime.settings import RuntimeSettings, SettingsSource

logger = logging.getLogger(__name__)

WEBHOOK_DRAIN_S = 2.0


class MonitorApp:
    """The monitor sidecar as a :class:`paca_runtime.Service`: started once, stopped once.

    Args:
        settings: Addresses, interval and liveness grace.
        runtime: The process's shared settings (shutdown grace).
        clock: Monotonic seconds for liveness, rates and alert rules.
        wall_clock: Seconds since the epoch, for displayed times.
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
        wall_clock: Callable[[], float] = time.time,
        collector_factory: Callable[[], HostCollector] | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.registry = ServiceRegistry(settings.down_after_s, clock=clock, wall_clock=wall_clock)
        self.sampler = Sampler(
            self.registry,
            settings.sample_interval_s,
            collector_factory or (lambda: HostCollector(clock=clock, wall_clock=wall_clock)),
            on_sample=lambda: self.alerting.evaluate(),
        )
        webhook = None
        if settings.alert_webhook_url:
            webhook = AlertWebhook(
                settings.alert_webhook_url,
                settings.api_address,
                channel_factory=lambda address: open_channel(address, runtime.security),
            )
        self.alerting = Alerting(
            settings.rules,
            MonitorMetrics(self.registry, self.sampler),
            webhook=webhook,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.grpc = GrpcServer(self.name, settings.listen_address, security=runtime.security)
        self.grpc.add_service(
            SERVICE_NAME,
            lambda server: monitor_service_pb2_grpc.add_MonitorServiceServicer_to_server(
                MonitorServicer(
                    self.registry, self.sampler, settings.sample_interval_s, self.alerting
                ),
                server,
            ),
        )
        self.http = ExpositionServer(
            settings.metrics_address,
            self.registry,
            self.sampler,
            settings.sample_interval_s,
            collectors=[self.alerting],
            alerts=self.alerting.active,
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
        self.alerting.start()
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
        # Alert changes from the last evaluation get a moment to reach the webhook.
        await self.alerting.aclose(drain_s=min(self.runtime.shutdown_grace_s, WEBHOOK_DRAIN_S))
        await self.http.aclose()
        if self.grpc.port:
            await self.grpc.stop(self.runtime.shutdown_grace_s, self.runtime.shutdown_drain_s)


def build(source: SettingsSource, runtime: RuntimeSettings) -> MonitorApp:
    """Make the monitor from its settings (the ``build`` of :func:`paca_runtime.run`)."""
    return MonitorApp(MonitorSettings.from_source(source, runtime), runtime)
