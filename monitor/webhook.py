"""Alert changes POSTed as JSON to a webhook URL, through api_service's ``Call`` RPC.

Going through api_service rather than an HTTP client of its own gives the webhook the same
retries, breaker, call log and tracing as every other outbound call. The monitor's part is to
never let a slow or absent api_service hold up evaluation:

- :meth:`AlertWebhook.enqueue` only appends to a bounded in-memory queue; when the queue is
  full the oldest change is dropped and counted (``dropped``), so memory stays bounded;
- one background task sends the queue in order; a transient failure (api_service unreachable,
  the call timing out, the webhook answering 408, 429 or 5xx) keeps the change at the head and
  retries after a full-jitter backoff (``retries``); a permanent one (a 4xx, a refused request)
  drops it and counts it (``failed``);
- each change carries an ``Idempotency-Key`` of alert id, state and time, so a change re-sent
  after a lost reply can be recognised by the receiver.

The URL often embeds a credential (chat webhooks do), so it is never logged, nor put in a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import grpc
from google.protobuf import json_format
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.monitor.v1 import monitor_types_pb2

logger = logging.getLogger(__name__)

Alert = monitor_types_pb2.Alert

PROVIDER: Final = "paca-monitor-alerts"
DEFAULT_MAX_QUEUED: Final = 1000
_RETRYABLE_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


def _retryable_http(status: int) -> bool:
    return status in (408, 429) or status >= 500


def alert_json(alert: Alert) -> str:
    """The JSON body sent for one alert change (proto field names, enum names)."""
    return json.dumps(
        json_format.MessageToDict(alert, preserving_proto_field_name=True), sort_keys=True
    )


class AlertWebhook:
    """Delivers alert changes to one webhook URL via api_service. Start once, ``aclose`` once.

    Args:
        url: The webhook's absolute http(s) URL; treated as a secret.
        api_address: ``host:port`` of api_service.
        channel_factory: Opens the channel to api_service (plaintext by default).
        max_queued: Changes kept while api_service cannot take them.
        timeout_s: Time limit of one Call, retries inside api_service included.
        retry_initial_s: First backoff after a transient failure; doubles up to
            ``retry_max_s``, with full jitter.
        retry_max_s: Longest backoff.
    """

    def __init__(
        self,
        url: str,
        api_address: str,
        *,
        channel_factory: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
        max_queued: int = DEFAULT_MAX_QUEUED,
        timeout_s: float = 10.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self._url = url
        self.api_address = api_address
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self._channel_factory = channel_factory
        self._queue: deque[Alert] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<AlertWebhook via={self.api_address} queued={len(self._queue)} sent={self.sent} "
            f"failed={self.failed} dropped={self.dropped} retries={self.retries}>"
        )

    @property
    def queued(self) -> int:
        """Changes waiting to be sent."""
        return len(self._queue)

    def enqueue(self, alert: Alert) -> None:
        """Queue one change for sending; never waits. Drops the oldest when full."""
        if self._stop.is_set():
            self.dropped += 1
            return
        if len(self._queue) >= self.max_queued:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "alert webhook queue full (%d); dropping the oldest", self.max_queued
                )
        self._queue.append(alert)
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Wait until every queued change is sent or given up on (no time limit of its own)."""
        await self._idle.wait()

    def start(self) -> None:
        """Open the channel and start sending. May be called once."""
        if self._task is not None:
            raise RuntimeError("AlertWebhook.start() may be called once")
        self._channel = self._channel_factory(self.api_address)
        self._task = asyncio.create_task(self._run(), name="monitor-alert-webhook")

    async def aclose(self) -> None:
        """Stop sending (a Call in flight is cancelled) and close the channel. Idempotent.

        Changes still queued are counted as dropped.
        """
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            logger.warning("alert webhook closed with %d changes unsent", len(self._queue))
            self.dropped += len(self._queue)
            self._queue.clear()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _run(self) -> None:
        assert self._channel is not None
        # grpc ships no type hints, so the stub's aio overload must be named.
        stub = cast(
            "api_service_pb2_grpc.ApiServiceAsyncStub",
            api_service_pb2_grpc.ApiServiceStub(self._channel),
        )
        attempt = 0
        while not self._stop.is_set():
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._send(stub, self._queue[0]):
                attempt = 0
                continue
            attempt += 1
            self.retries += 1
            delay_s = random.uniform(0, min(self.retry_max_s, self.retry_initial_s * 2**attempt))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay_s)

    async def _send(self, stub: api_service_pb2_grpc.ApiServiceAsyncStub, alert: Alert) -> bool:
        """Send the head of the queue; True when it is done with (sent, or failed for good)."""
        request = api_service_pb2.CallRequest(
            url=self._url,
            method=api_types_pb2.HTTP_METHOD_POST,
            json_body=alert_json(alert),
            idempotency_key=(
                f"{alert.id}-{monitor_types_pb2.AlertState.Name(alert.state)}-"
                f"{alert.since.ToNanoseconds()}"
            ),
            provider=PROVIDER,
        )
        try:
            reply = await stub.Call(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RETRYABLE_CODES:
                logger.debug("alert webhook via %s: %s; will retry", self.api_address, exc.code())
                return False
            # The message may quote the URL; only the code is logged.
            logger.warning("alert webhook refused by api_service: %s", exc.code().name)
            return self._done(alert, sent=False)
        if 200 <= reply.status_code < 300:
            return self._done(alert, sent=True)
        if _retryable_http(reply.status_code):
            logger.debug("alert webhook answered %d; will retry", reply.status_code)
            return False
        logger.warning("alert webhook answered %d; change dropped", reply.status_code)
        return self._done(alert, sent=False)

    def _done(self, alert: Alert, *, sent: bool) -> bool:
        # A full queue may have dropped this change while it was in flight.
        if self._queue and self._queue[0] is alert:
            self._queue.popleft()
        if sent:
            self.sent += 1
        else:
            self.failed += 1
        return True
