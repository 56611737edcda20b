"""The call recorder: batches, spools while the sink fails, drains in order once it recovers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from paca.db.v1 import db_types_pb2

from api_service.calllog import CallRecorder
from api_service.settings import CallLogSettings

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class Sink:
    """Stands in for db_service; ``failing`` makes it fail the way an unreachable one does."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.failing = False
        self.rejecting = False
        self.attempts = 0
        self.called = asyncio.Event()

    async def __call__(self, records: Sequence[db_types_pb2.ApiCallRecord]) -> None:
        self.attempts += 1
        self.called.set()
        if self.rejecting:
            raise _RpcError(grpc.StatusCode.INVALID_ARGUMENT)
        if self.failing:
            raise _RpcError(grpc.StatusCode.UNAVAILABLE)
        self.batches.append([r.record_id for r in records])

    @property
    def stored(self) -> list[str]:
        return [record_id for batch in self.batches for record_id in batch]


class _RpcError(grpc.aio.AioRpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


def files(directory: Path, pattern: str) -> int:
    return len(list(directory.glob(pattern)))


def make_record() -> db_types_pb2.ApiCallRecord:
    return db_types_pb2.ApiCallRecord(record_id=str(uuid.uuid4()), provider="p")


def settings(tmp_path: Path, batch_size: int = 3) -> CallLogSettings:
    return CallLogSettings(batch_size=batch_size, flush_interval_s=0.01, spool_dir=tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_records_are_sent_in_batches_of_at_most_batch_size(tmp_path: Path) -> None:
    sink = Sink()
    recorder = CallRecorder(settings(tmp_path), sink)
    await recorder.start()
    ids = []
    for _ in range(7):
        record = make_record()
        ids.append(record.record_id)
        recorder.record(record)
    await recorder.flushed()
    await recorder.aclose()
    assert sink.stored == ids
    assert max(len(b) for b in sink.batches) <= 3
    assert recorder.spooled == 0


async def test_failing_sink_spools_and_recovery_drains_everything_once(tmp_path: Path) -> None:
    sink = Sink()
    sink.failing = True
    clock = Clock()
    recorder = CallRecorder(settings(tmp_path), sink, clock=clock)
    await recorder.start()
    records = [make_record() for _ in range(8)]
    for record in records:
        recorder.record(record)
    await recorder.flushed()
    assert recorder.spooled == 8
    assert recorder.spool_files >= 1
    attempts = sink.attempts
    assert attempts == 1  # after one failure, batches go straight to the spool

    sink.failing = False
    sink.called.clear()
    clock.now = 100.0  # past the drain backoff
    await sink.called.wait()
    await recorder.aclose()
    assert sorted(sink.stored) == sorted(r.record_id for r in records)
    assert recorder.spool_files == 0
    assert files(tmp_path, "*.batch") == 0


async def test_spooled_batches_survive_a_restart(tmp_path: Path) -> None:
    down = Sink()
    down.failing = True
    first = CallRecorder(settings(tmp_path), down)
    await first.start()
    records = [make_record() for _ in range(4)]
    for record in records:
        first.record(record)
    await first.aclose()  # shutdown spools what could not be sent
    assert files(tmp_path, "*.batch") >= 1

    up = Sink()
    second = CallRecorder(settings(tmp_path), up)
    await second.start()
    await up.called.wait()
    await second.aclose()
    assert sorted(up.stored) == sorted(r.record_id for r in records)
    assert files(tmp_path, "*.batch") == 0


async def test_batch_refused_as_invalid_is_parked_not_retried(tmp_path: Path) -> None:
    sink = Sink()
    sink.rejecting = True
    recorder = CallRecorder(settings(tmp_path), sink)
    await recorder.start()
    recorder.record(make_record())
    await recorder.flushed()
    await recorder.aclose()
    assert sink.attempts == 1
    assert recorder.rejected == 1
    assert files(tmp_path / "rejected", "*.batch") == 1
    assert files(tmp_path, "*.batch") == 0


async def test_corrupt_spool_file_is_set_aside_and_the_rest_drains(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001-1-000000.batch").write_bytes(b"\xff\xff not protobuf")
    sink = Sink()
    recorder = CallRecorder(settings(tmp_path), sink)
    await recorder.start()
    record = make_record()
    recorder.record(record)
    await recorder.flushed()
    await recorder.aclose()
    assert sink.stored == [record.record_id]
    assert files(tmp_path, "*.corrupt") == 1


async def test_flushed_waits_for_a_batch_already_taken_off_the_queue(tmp_path: Path) -> None:
    sink = Sink()
    release, sending = asyncio.Event(), asyncio.Event()

    async def slow_sink(records: Sequence[db_types_pb2.ApiCallRecord]) -> None:
        sending.set()
        await release.wait()
        await sink(records)

    recorder = CallRecorder(settings(tmp_path), slow_sink)
    await recorder.start()
    recorder.record(make_record())
    await sending.wait()  # the record is off the queue, its batch not yet stored
    assert recorder.pending == 0
    flushed = asyncio.create_task(recorder.flushed())
    await asyncio.sleep(0)
    assert not flushed.done()
    release.set()
    await flushed
    assert len(sink.stored) == 1
    await recorder.aclose()


async def test_records_that_come_in_during_a_send_wait_for_a_full_batch(tmp_path: Path) -> None:
    sink = Sink()
    release, sending, sent = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_sink(records: Sequence[db_types_pb2.ApiCallRecord]) -> None:
        sending.set()
        await release.wait()
        await sink(records)
        sent.set()

    # A long interval: only a full batch (or flushed) sends what came in during a send.
    recorder = CallRecorder(
        CallLogSettings(batch_size=4, flush_interval_s=5.0, spool_dir=tmp_path), slow_sink
    )
    await recorder.start()
    first = [make_record() for _ in range(4)]
    for record in first:
        recorder.record(record)  # a full batch goes at once
    await sending.wait()
    during = [make_record() for _ in range(2)]
    for record in during:
        recorder.record(record)
    release.set()
    await sent.wait()
    sent.clear()
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.batches == [[r.record_id for r in first]]  # no batch of two
    later = [make_record() for _ in range(2)]
    for record in later:
        recorder.record(record)
    await sent.wait()
    assert sink.batches[1] == [r.record_id for r in during + later]
    await recorder.aclose()
