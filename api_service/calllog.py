"""The call log: every outbound call becomes an ``ApiCallRecord`` stored through db_service.

Recording never slows or fails a call: ``record()`` only appends to memory. A background task
sends batches (by size or every flush interval) with ``DbService.RecordApiCalls``. When
db_service is down or slow, batches go to a durable on-disk spool instead, and the spool is
drained, oldest first and with backoff, once db_service answers again; spooled batches survive a
restart. Records carry a UUID and db_service skips ids it already has, so a batch re-sent after a
lost reply is stored once. What stays unsent in memory on shutdown is spooled.

Tracing: a flush is one span whose parent is the first record's call and which links to every
other call in the batch (OpenTelemetry's convention for batched work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2

from api_service.settings import CallLogSettings
from api_service.spool import Spool

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Sink = Callable[[Sequence[db_types_pb2.ApiCallRecord]], Awaitable[None]]
MAX_LINKS = 128
MAX_BACKOFF_S = 5.0


class DbServiceSink:
    """Sends batches to db_service's RecordApiCalls over a channel opened once."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 5.0) -> None:
        self._stub = db_service_pb2_grpc.DbServiceStub(channel)
        self.timeout_s = timeout_s

    async def __call__(self, records: Sequence[db_types_pb2.ApiCallRecord]) -> None:
        await self._stub.RecordApiCalls(
            db_service_pb2.RecordApiCallsRequest(records=records), timeout=self.timeout_s
        )


class CallRecorder:
    """Batches call records to a sink, spooling to disk while the sink fails.

    Lifecycle: ``start()`` once, ``record()`` any number of times, ``aclose()`` (idempotent).

    Args:
        settings: Batch size, flush interval, spool directory.
        sink: Where batches go; None keeps everything in the spool.
        clock: Monotonic clock for the drain backoff.
    """

    def __init__(
        self,
        settings: CallLogSettings,
        sink: Sink | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.spool = Spool(settings.spool_dir)
        self.recorded = 0
        self.stored = 0
        self.spooled = 0
        # Spooled records since sent to db_service.
        self.replayed = 0
        self.send_failures = 0
        self._clock = clock
        self._pending: deque[tuple[db_types_pb2.ApiCallRecord, trace.SpanContext]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._sink_down = False
        self.rejected = 0
        self._rejected_spool = Spool(settings.spool_dir / "rejected")
        # Set while nothing recorded is waiting or being sent; a batch taken off the queue but
        # still on its way keeps it cleared, so flushed() cannot return early.
        self._idle = asyncio.Event()
        self._idle.set()
        # flushed() waits: send everything, however much comes in meanwhile.
        self._flush_all = False
        self._next_drain = 0.0
        self._backoff_s = 0.1
        self._spool_files = 0

    def __repr__(self) -> str:
        return (
            f"<CallRecorder pending={len(self._pending)} recorded={self.recorded} "
            f"stored={self.stored} spooled={self.spooled} spool_files={self._spool_files}>"
        )

    @property
    def pending(self) -> int:
        """Records in memory, not yet sent or spooled."""
        return len(self._pending)

    @property
    def spool_files(self) -> int:
        """Spooled batches waiting for db_service."""
        return self._spool_files

    def record(
        self, record: db_types_pb2.ApiCallRecord, span_context: trace.SpanContext | None = None
    ) -> None:
        """Queue one record of the call whose span context is ``span_context`` (default: the
        current span's); never blocks, never raises."""
        if span_context is None:
            span_context = trace.get_current_span().get_span_context()
        self._pending.append((record, span_context))
        self._idle.clear()
        self.recorded += 1
        if len(self._pending) >= self.settings.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._spool_files = len(await asyncio.to_thread(self.spool.pending))
        self._task = asyncio.create_task(self._run(), name="calllog")

    async def aclose(self) -> None:
        """Send or spool everything still in memory, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self._task
        self._task = None

    async def flushed(self) -> None:
        """Wait until every record recorded so far is sent or spooled."""
        if not self._idle.is_set():
            self._flush_all = True
            self._wake.set()
            await self._idle.wait()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.flush_interval_s)
            self._wake.clear()
            # The records waiting now go out; those that come in meanwhile wait for a full
            # batch or the next interval. Sending until the queue is empty would, under steady
            # load, send whatever came in during the last send: batches of a few records, one
            # RPC each, at one round trip's pace (unless flushed() or aclose() asks for it all).
            due = len(self._pending)
            while self._pending and (due > 0 or self._flush_all or self._closing):
                due -= min(len(self._pending), self.settings.batch_size)
                await self._flush_batch()
            self._flush_all = False
            if not self._pending:
                self._idle.set()
            if self._closing:
                return
            if self._spool_files and self._clock() >= self._next_drain:
                await self._drain_spool()

    async def _flush_batch(self) -> None:
        size = min(len(self._pending), self.settings.batch_size)
        batch = [self._pending.popleft() for _ in range(size)]
        records = [record for record, _ in batch]
        contexts = [ctx for _, ctx in batch if ctx.is_valid]
        # The flush belongs to a sampled call's trace when there is one (a trace nobody keeps
        # is no place for it, and a link to one leads nowhere), else to an unsampled one, so
        # that it is not recorded either.
        sampled = [ctx for ctx in contexts if ctx.trace_flags.sampled]
        first = sampled[0] if sampled else contexts[0] if contexts else None
        parent = trace.set_span_in_context(trace.NonRecordingSpan(first)) if first else None
        links = [trace.Link(ctx) for ctx in sampled[1:MAX_LINKS]]
        with tracer.start_as_current_span(
            "calllog.flush", context=parent, links=links, attributes={"calllog.records": size}
        ):
            if not self._sink_down and await self._send(records):
                return
            await self._spool(records)

    async def _send(self, records: Sequence[db_types_pb2.ApiCallRecord]) -> bool:
        if self.sink is None:
            return False
        try:
            await self.sink(records)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                return self._sink_failed(exc)
            # Retrying cannot help a batch db_service refuses: park it for inspection.
            logger.error("call log: db_service rejected a batch, parked: %s", exc.details())
            self.rejected += len(records)
            data = db_service_pb2.RecordApiCallsRequest(records=records).SerializeToString()
            await asyncio.to_thread(self._rejected_spool.put, data)
            return True
        except Exception as exc:
            return self._sink_failed(exc)
        self.stored += len(records)
        return True

    def _sink_failed(self, exc: Exception) -> bool:
        self.send_failures += 1
        if not self._sink_down:
            logger.warning("call log: db_service unreachable, spooling: %s", exc)
        self._sink_down = True
        self._next_drain = self._clock() + self._backoff_s
        return False

    async def _spool(self, records: Sequence[db_types_pb2.ApiCallRecord]) -> None:
        data = db_service_pb2.RecordApiCallsRequest(records=records).SerializeToString()
        await asyncio.to_thread(self.spool.put, data)
        self.spooled += len(records)
        self._spool_files += 1

    async def _drain_spool(self) -> None:
        with tracer.start_as_current_span("calllog.drain"):
            for path in await asyncio.to_thread(self.spool.pending):
                try:
                    request = db_service_pb2.RecordApiCallsRequest.FromString(
                        await asyncio.to_thread(self.spool.read, path)
                    )
                except DecodeError:
                    logger.error("call log: unreadable spool file %s set aside", path)
                    await asyncio.to_thread(path.rename, path.with_suffix(".corrupt"))
                    continue
                self._sink_down = False
                if not await self._send(request.records):
                    self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)
                    self._next_drain = self._clock() + self._backoff_s
                    return
                await asyncio.to_thread(self.spool.remove, path)
                self.replayed += len(request.records)
                self._spool_files = max(0, self._spool_files - 1)
        self._backoff_s = 0.1
        self._sink_down = False
        logger.info("call log: spool drained")
