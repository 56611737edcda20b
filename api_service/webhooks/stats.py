"""Counts of this replica's webhook intake and delivery, for GetWebhookStats and the monitor."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from paca.monitor.v1 import monitor_types_pb2

from paca_runtime.reporting import counter


@dataclass
class WebhookStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    store_failures: int = 0
    delivered: int = 0
    redelivered: int = 0
    dead: int = 0

    def figures(self) -> Iterator[monitor_types_pb2.Metric]:
        yield counter("webhooks_accepted_total", self.accepted)
        yield counter("webhooks_duplicate_total", self.duplicates)
        yield counter("webhooks_store_failures_total", self.store_failures)
        yield counter("webhooks_delivered_total", self.delivered)
        yield counter("webhooks_redelivered_total", self.redelivered)
        yield counter("webhooks_dead_total", self.dead)
        for reason, count in sorted(self.rejected.items()):
            yield counter("webhooks_rejected_total", count, reason=reason)


class Wakeup:
    """Lets the intake wake idle subscribers of this replica as soon as an event is stored."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        """Return on the next notify() or after ``timeout_s``, whichever comes first."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
