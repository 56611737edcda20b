"""Errors of the monitor, each carrying the gRPC status a client sees.

The monitor validates reports with :class:`~paca_runtime.errors.InvalidArgument`; what is its
own is below. The servicer turns them into statuses with google.rpc details in one place
(:func:`~paca_runtime.errors.status_of`)::

    StatusError (paca_runtime)
    └── MonitorError
        └── WatcherBehind   RESOURCE_EXHAUSTED: an alert watcher fell too far behind
"""

from __future__ import annotations

import grpc

from paca_runtime.errors import StatusError


class MonitorError(StatusError):
    """Root of the monitor's own errors."""


class WatcherBehind(MonitorError):
    """A WatchAlerts stream left more alerts unread than the monitor keeps for it.

    The stream is ended rather than silently skipping alerts; the watcher reconnects with
    ``include_active`` to resynchronise.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, max_queued: int) -> None:
        super().__init__(
            f"more than {max_queued} alert changes unread; watch again with include_active"
        )
        self.max_queued = max_queued
