"""ApiService.CallStream: large bodies relayed in chunks, head first, recorded without body."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable

import grpc
import psutil
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.db.v1 import db_service_pb2_grpc

from api_service import ApiApp
from api_service.streaming import CHUNK_BYTES
from tests.conftest import Upstream, eventually
from tests.integration.test_api_call import count_logs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BODY_MB = 50


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def stream_request(url: str) -> api_service_pb2.CallStreamRequest:
    return api_service_pb2.CallStreamRequest(call=api_service_pb2.CallRequest(url=url))


async def test_a_50_mb_body_is_relayed_in_chunks_with_bounded_memory(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    # Upstream, api_service and client share this process: its RSS bounds what any of them
    # holds. The body is 50 MiB, far over max_response_bytes (4 MiB) too.
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    expected = hashlib.sha256()
    block = bytes(range(256)) * 256
    for _ in range(BODY_MB * 1024 * 1024 // len(block)):
        expected.update(block)
    received = hashlib.sha256()
    size = chunks = 0
    started = time.perf_counter()
    call = api_stub.CallStream(stream_request(f"{upstream.url}/big?mb={BODY_MB}"), timeout=30)
    first = await call.read()
    assert isinstance(first, api_service_pb2.CallStreamResponse)
    assert first.WhichOneof("part") == "head"
    assert first.head.status_code == 200
    assert first.head.attempts == 1
    assert ("Content-Length", str(BODY_MB * 1024 * 1024)) in [
        (h.name, h.value) for h in first.head.headers
    ]
    while (message := await call.read()) is not grpc.aio.EOF:
        assert isinstance(message, api_service_pb2.CallStreamResponse)
        assert message.WhichOneof("part") == "chunk"
        assert 0 < len(message.chunk) <= CHUNK_BYTES
        received.update(message.chunk)
        size += len(message.chunk)
        chunks += 1
        if chunks % 16 == 0:
            peak = max(peak, process.memory_info().rss)
    elapsed = time.perf_counter() - started
    assert size == BODY_MB * 1024 * 1024
    assert received.digest() == expected.digest()
    growth_mb = (peak - baseline) / 2**20
    print(f"streamed {BODY_MB} MiB in {elapsed:.2f} s, {chunks} chunks, RSS +{growth_mb:.1f} MiB")
    assert growth_mb < 20
    await api_app.recorder.flushed()
    # Recorded once, as a success, without the body.
    assert await count_logs(db_stub, "success AND status_code = 200 AND data IS NULL") == 1


async def test_retries_happen_before_the_head_and_failures_are_recorded(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    messages = [
        m
        async for m in api_stub.CallStream(
            stream_request(f"{upstream.url}/flaky/s?fail=1"), timeout=10
        )
    ]
    assert messages[0].head.status_code == 200
    assert messages[0].head.attempts == 2
    assert b"".join(m.chunk for m in messages[1:]) == b'{"hit": 2}'

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in api_stub.CallStream(stream_request("http://127.0.0.1:1/x"), timeout=10):
            pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await api_app.recorder.flushed()
    assert await count_logs(db_stub, "success AND attempts = 2") == 1
    assert await count_logs(db_stub, "NOT success AND status_code = 0") == 1


async def test_a_caller_that_leaves_mid_body_is_recorded_as_a_failure(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    call = api_stub.CallStream(stream_request(f"{upstream.url}/big?mb=20"), timeout=30)
    assert (await call.read()).head.status_code == 200
    await call.read()
    call.cancel()

    async def recorded() -> int:
        await api_app.recorder.flushed()
        return await count_logs(db_stub, "NOT success AND status_code = 200")

    # The server learns of the cancellation asynchronously: no event of ours marks it.
    await eventually(lambda: _equals(recorded(), 1))
    assert api_app.caller.stats.target("", upstream.url.removeprefix("http://")).calls == 1


async def test_a_stream_without_a_call_is_invalid_argument(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in api_stub.CallStream(api_service_pb2.CallStreamRequest(), timeout=5):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
