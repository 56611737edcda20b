"""ApiService.FanOut: parallel calls, per-call and overall deadlines, partial results, and a
call log that survives db_service being down."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.db.v1 import db_service_pb2_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from db_service import DatabaseSettings, DbApp, DbSettings
from tests.conftest import Upstream, eventually
from tests.integration.conftest import runtime_settings
from tests.integration.test_api_call import count_logs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def fan_out(
    *urls: str, call_timeout_s: float = 0, timeout_s: float = 0
) -> api_service_pb2.FanOutRequest:
    request = api_service_pb2.FanOutRequest(
        calls=[api_service_pb2.CallRequest(url=url) for url in urls]
    )
    if call_timeout_s:
        request.call_timeout.FromMilliseconds(round(call_timeout_s * 1000))
    if timeout_s:
        request.timeout.FromMilliseconds(round(timeout_s * 1000))
    return request


async def test_each_call_has_its_own_result_in_order_and_every_sent_call_is_recorded(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    started = time.perf_counter()
    reply = await api_stub.FanOut(
        fan_out(
            f"{upstream.url}/echo",
            f"{upstream.url}/status/500",
            f"{upstream.url}/slow?s=5",
            "http://127.0.0.1:1/closed",
            "ftp://example.com/not-http",
            f"{upstream.url}/binary",
            call_timeout_s=0.5,
        ),
        timeout=10,
    )
    elapsed = time.perf_counter() - started
    results = list(reply.results)
    assert [r.index for r in results] == [0, 1, 2, 3, 4, 5]
    assert results[0].response.status_code == 200
    assert results[1].response.status_code == 500
    assert results[2].error_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert results[3].error_code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert results[4].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[4].error_message.startswith("calls[4].url:")
    assert results[5].response.body == bytes(range(256)) * 64
    assert (reply.succeeded, reply.failed) == (2, 4)
    # In parallel: the slow call's deadline, not the sum of the calls.
    assert elapsed < 2.0
    await api_app.recorder.flushed()
    assert await count_logs(db_stub) == 5  # the invalid one never left


async def test_the_overall_deadline_ends_calls_still_running(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    started = time.perf_counter()
    reply = await api_stub.FanOut(
        fan_out(f"{upstream.url}/slow?s=5", f"{upstream.url}/echo", timeout_s=0.3), timeout=10
    )
    assert time.perf_counter() - started < 1.5
    assert reply.results[0].error_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert reply.results[1].response.status_code == 200
    await api_app.recorder.flushed()
    assert await count_logs(db_stub, "NOT success") == 1


@pytest.mark.parametrize(("calls", "field"), [(0, "calls"), (101, "calls")])
async def test_a_fan_out_without_calls_or_with_too_many_is_invalid(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream, calls: int, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.FanOut(fan_out(*[f"{upstream.url}/echo"] * calls), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not upstream.seen_headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def api_without_db(tmp_path: Path) -> AsyncIterator[tuple[ApiApp, str]]:
    """An api_service whose db_service address has nothing listening (yet)."""
    db_address = f"127.0.0.1:{free_port()}"
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address=db_address,
        calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool"),
    )
    app = ApiApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        yield app, db_address
    finally:
        await app.stop()


async def test_db_service_down_neither_fails_the_reply_nor_loses_records(
    api_without_db: tuple[ApiApp, str], upstream: Upstream, tmp_path: Path
) -> None:
    app, db_address = api_without_db
    async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
        stub = api_service_pb2_grpc.ApiServiceStub(channel)
        reply = await stub.FanOut(fan_out(*[f"{upstream.url}/echo?n={i}" for i in range(3)]))
        assert reply.succeeded == 3
        await app.recorder.flushed()
        stats = await stub.GetStats(api_service_pb2.GetStatsRequest())
        assert stats.calllog_delayed_records == 3
        assert stats.calllog_replayed_records == 0

        db = DbApp(
            DbSettings(
                listen=db_address,
                databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
            ),
            runtime_settings(tmp_path / "db"),
        )
        await db.start()
        try:

            async def replayed() -> bool:
                reply = await stub.GetStats(api_service_pb2.GetStatsRequest())
                return bool(reply.calllog_replayed_records == 3)

            # The spool drains on its own backoff schedule; nothing here to await.
            await eventually(replayed, timeout_s=15)
            async with grpc.aio.insecure_channel(db_address) as db_channel:
                assert await count_logs(db_service_pb2_grpc.DbServiceStub(db_channel)) == 3
        finally:
            await db.stop()


async def test_a_call_its_caller_cancels_is_still_recorded(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    # What a fan-out does to a call still running at its deadline, done here by a client.
    call = api_stub.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/slow?s=5"), timeout=10)
    await upstream.slow_started.wait()
    call.cancel()

    async def recorded() -> bool:
        await api_app.recorder.flushed()
        where = "NOT success AND error_message = 'the caller cancelled the call'"
        return await count_logs(db_stub, where) == 1

    # The server learns of the cancellation asynchronously: no event of ours marks it.
    await eventually(recorded)
