"""Alerting as the monitor runs it: evaluate after each sample, deliver every change.

Ties the pieces together: the figures are exactly what ``/metrics`` would show now
(:class:`~monitor.exposition.MonitorMetrics`), the :class:`~monitor.alerts.AlertEngine` turns
them into alert changes, and each change goes to the log and the WatchAlerts streams
(:class:`~monitor.alert_feed.AlertFeed`) and, when configured, to the webhook
(:class:`~monitor.webhook.AlertWebhook`). Evaluation is synchronous and never waits on
delivery, so a slow watcher or an absent api_service cannot delay the next evaluation.

Also a prometheus-client collector of its own figures (``paca_alerts``,
``paca_alert_webhook_*_total``), so the alerting pipeline is itself observable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence

from paca.monitor.v1 import monitor_types_pb2
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from monitor.alert_feed import AlertFeed
from monitor.alerts import AlertEngine
from monitor.exposition import MonitorMetrics
from monitor.figures import FigureTable
from monitor.rules import SEVERITIES, AlertRule
from monitor.webhook import AlertWebhook

logger = logging.getLogger(__name__)

Alert = monitor_types_pb2.Alert
Clock = Callable[[], float]


class Alerting:
    """Rules evaluated over the monitor's figures, with delivery. ``start`` once, ``aclose`` once.

    Args:
        rules: The alert rules.
        metrics: The figures the rules see.
        feed: Log and WatchAlerts delivery.
        webhook: Webhook delivery, or None when no URL is configured.
        clock: Monotonic seconds for the engine.
        wall_clock: Seconds since the epoch, for the ``since`` of alerts.
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        metrics: MonitorMetrics,
        *,
        feed: AlertFeed | None = None,
        webhook: AlertWebhook | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.engine = AlertEngine(rules, clock=clock, wall_clock=wall_clock)
        self.feed = feed or AlertFeed()
        self.webhook = webhook
        self._metrics = metrics

    def __repr__(self) -> str:
        return f"<Alerting {self.engine!r} {self.feed!r} webhook={self.webhook!r}>"

    def start(self) -> None:
        """Start webhook delivery, if configured."""
        if self.webhook is not None:
            self.webhook.start()

    async def aclose(self, drain_s: float = 0.0) -> None:
        """End the WatchAlerts streams and stop webhook delivery. Idempotent.

        Args:
            drain_s: Time queued webhook changes get to go out first; what is still queued
                after it is dropped and counted.
        """
        self.feed.close()
        if self.webhook is not None:
            if drain_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.webhook.wait_idle(), drain_s)
            await self.webhook.aclose()

    def evaluate(self) -> list[Alert]:
        """Evaluate every rule on the figures of this moment and deliver the changes."""
        changes = self.engine.evaluate(FigureTable(self._metrics.collect()))
        self.feed.publish(changes)
        if self.webhook is not None:
            for change in changes:
                self.webhook.enqueue(change)
        return changes

    def active(self) -> list[Alert]:
        """Alerts pending or firing now, most severe first."""
        return self.engine.active()

    def collect(self) -> Iterator[Metric]:
        """The alerting pipeline's own figures, for ``/metrics``."""
        counts = {
            (state, severity): 0 for state in ("pending", "firing") for severity in SEVERITIES
        }
        severity_names = {value: name for name, value in SEVERITIES.items()}
        for alert in self.engine.active():
            state = "firing" if alert.state == monitor_types_pb2.ALERT_STATE_FIRING else "pending"
            counts[(state, severity_names[alert.severity])] += 1
        active = GaugeMetricFamily(
            "paca_alerts", "Alerts pending or firing now", labels=["state", "severity"]
        )
        for (state, severity), count in counts.items():
            active.add_metric([state, severity], count)
        yield active
        yield CounterMetricFamily(
            "paca_alert_evaluations", "Rule evaluations done", value=self.engine.evaluations
        )
        if self.webhook is not None:
            for name, doc, value in (
                ("sent", "Alert changes the webhook accepted", self.webhook.sent),
                ("failed", "Alert changes the webhook refused for good", self.webhook.failed),
                (
                    "dropped",
                    "Alert changes dropped unsent (queue full, shutdown)",
                    self.webhook.dropped,
                ),
                (
                    "retries",
                    "Webhook sends retried after a transient failure",
                    self.webhook.retries,
                ),
            ):
                yield CounterMetricFamily(f"paca_alert_webhook_{name}", doc, value=value)
