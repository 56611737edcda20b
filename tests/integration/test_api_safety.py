"""Outbound safety: refused networks (literal, DNS and redirect) and the response size limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from paca_runtime import RuntimeSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def _big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # chunked: no Content-Length to refuse it early
    await response.prepare(request)
    for _ in range(64):
        await response.write(b"x" * 1024)
    await response.write_eof()
    return response


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


async def _small(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def local_upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/big", _big)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/small", _small)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def strict_stub(
    tmp_path: Path, allowed_networks: str, max_response_bytes: int = 1 << 20
) -> AsyncIterator[tuple[ApiApp, api_service_pb2_grpc.ApiServiceStub]]:
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address="",
        calllog=CallLogSettings(spool_dir=tmp_path / "spool"),
        allowed_networks=allowed_networks,
        max_response_bytes=max_response_bytes,
    )
    app = ApiApp(settings, RuntimeSettings(monitor_address="", state_dir=tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            yield app, api_service_pb2_grpc.ApiServiceStub(channel)
    finally:
        await app.stop()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return info


async def denied(stub: api_service_pb2_grpc.ApiServiceStub, url: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Call(api_service_pb2.CallRequest(url=url))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(caught.value)
    assert (info.reason, dict(info.metadata)) == ("FORBIDDEN_NETWORK", {"field": "url"})
    assert (caught.value.details() or "").startswith("url: ")
    return caught.value


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[fd00::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0/",
    ],
)
async def test_literal_metadata_and_private_addresses_are_permission_denied_and_not_recorded(
    api_app: ApiApp, api_stub: api_service_pb2_grpc.ApiServiceStub, url: str
) -> None:
    await denied(api_stub, url)
    await api_app.recorder.flushed()
    assert api_app.recorder.recorded == 0


async def test_name_resolving_only_to_a_refused_network_is_permission_denied(
    tmp_path: Path, local_upstream: str
) -> None:
    port = local_upstream.rpartition(":")[2]
    async for _, stub in strict_stub(tmp_path, allowed_networks=""):
        await denied(stub, f"http://127.0.0.1:{port}/small")  # the literal, before sending
        await denied(stub, f"http://localhost:{port}/small")  # the DNS answer


async def test_redirect_to_a_refused_literal_address_is_permission_denied(
    tmp_path: Path, local_upstream: str
) -> None:
    port = local_upstream.rpartition(":")[2]
    target = f"http://127.0.0.2:{port}/small"
    async for _, stub in strict_stub(tmp_path, allowed_networks="127.0.0.1/32"):
        reply = await stub.Call(api_service_pb2.CallRequest(url=f"http://{local_upstream}/small"))
        assert reply.body == b"ok"
        await denied(stub, f"http://{local_upstream}/redirect?to={target}")


async def test_body_over_the_size_limit_is_resource_exhausted_without_retries(
    tmp_path: Path, local_upstream: str
) -> None:
    async for app, stub in strict_stub(tmp_path, "127.0.0.0/8", max_response_bytes=10_000):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(api_service_pb2.CallRequest(url=f"http://{local_upstream}/big"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "10000 bytes" in (caught.value.details() or "")
        [target] = app.caller.stats.targets()
        assert target.attempts == 1
        reply = await stub.Call(api_service_pb2.CallRequest(url=f"http://{local_upstream}/small"))
        assert reply.body == b"ok"
