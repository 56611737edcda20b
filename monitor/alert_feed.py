"""Fan-out of alert changes: to the log, and to every open WatchAlerts stream.

Publishing never waits: each watcher has its own queue, and a watcher that leaves more than
``max_queued`` changes unread is cut off with :class:`~monitor.errors.WatcherBehind` instead of
holding up evaluation or growing without bound. Closing the feed ends every stream cleanly, so
the gRPC server's graceful stop does not wait out the grace on open streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

from paca.monitor.v1 import monitor_types_pb2

from monitor.errors import WatcherBehind

logger = logging.getLogger(__name__)

Alert = monitor_types_pb2.Alert

DEFAULT_MAX_QUEUED: Final = 1000

_FIRING_LOG_LEVEL: Final = {
    monitor_types_pb2.SEVERITY_INFO: logging.INFO,
    monitor_types_pb2.SEVERITY_WARNING: logging.WARNING,
    monitor_types_pb2.SEVERITY_CRITICAL: logging.ERROR,
}


class AlertSubscription:
    """One watcher's queue of alert changes; made by :meth:`AlertFeed.subscribe`."""

    def __init__(self, feed: AlertFeed, max_queued: int) -> None:
        self._feed = feed
        self._max_queued = max_queued
        self._queue: asyncio.Queue[Alert | None] = asyncio.Queue()
        self._behind = False

    def __repr__(self) -> str:
        return f"<AlertSubscription queued={self._queue.qsize()} behind={self._behind}>"

    def __enter__(self) -> AlertSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving. Idempotent."""
        self._feed._subscriptions.discard(self)

    async def next(self) -> Alert | None:
        """The next change, waiting for one; None once the feed is closed.

        Raises:
            WatcherBehind: More than ``max_queued`` changes were left unread.
        """
        if self._behind:
            raise WatcherBehind(self._max_queued)
        return await self._queue.get()

    def _put(self, alert: Alert | None) -> None:
        if alert is not None and self._queue.qsize() >= self._max_queued:
            self._behind = True
            self.close()
            self._queue.put_nowait(None)  # wake a waiting next(), which then raises
            return
        self._queue.put_nowait(alert)


class AlertFeed:
    """Logs alert changes and hands them to the watchers subscribed at that moment.

    Used from the event loop only.

    Args:
        max_queued: Unread changes one watcher may have before it is cut off.
    """

    def __init__(self, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self.published = 0
        self._subscriptions: set[AlertSubscription] = set()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<AlertFeed watchers={len(self._subscriptions)} published={self.published} "
            f"closed={self._closed}>"
        )

    def subscribe(self) -> AlertSubscription:
        """A new watcher that receives every change published from now on.

        On a closed feed, the subscription is closed too: its first ``next()`` returns None.
        """
        subscription = AlertSubscription(self, self.max_queued)
        if self._closed:
            subscription._put(None)
        else:
            self._subscriptions.add(subscription)
        return subscription

    def publish(self, alerts: Iterable[Alert]) -> None:
        """Log each change and queue it for every watcher; never waits."""
        for alert in alerts:
            self.published += 1
            _log(alert)
            for subscription in list(self._subscriptions):
                subscription._put(alert)

    def close(self) -> None:
        """End every watcher's stream; later subscriptions end at once. Idempotent."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            subscription._put(None)


def _log(alert: Alert) -> None:
    if alert.state == monitor_types_pb2.ALERT_STATE_FIRING:
        level = _FIRING_LOG_LEVEL.get(alert.severity, logging.WARNING)
        logger.log(level, "alert firing: %s [%s]", alert.summary, alert.id)
    else:
        logger.info("alert resolved: %s [%s]", alert.summary, alert.id)
