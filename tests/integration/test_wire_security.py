"""TLS, mTLS and bearer-token scopes on a real server over real sockets."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from paca_runtime.channels import open_channel
from paca_runtime.security import SecuritySettings, TlsSettings, TokenTable, token_digest
from paca_runtime.server import GrpcServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
CALLER_TOKEN = "caller-secret-7f3a"
ADMIN_TOKEN = "admin-secret-91bc"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "make_certs.sh"), str(directory)],
        check=True,
        capture_output=True,
    )
    return directory


def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f"""
[[token]]
name = "caller"
sha256 = "{token_digest(CALLER_TOKEN).hex()}"
scopes = ["api.call"]

[[token]]
name = "admin"
sha256 = "{token_digest(ADMIN_TOKEN).hex()}"
scopes = ["api.admin"]
"""
    )
    return path


class Endpoints(api_service_pb2_grpc.ApiServiceServicer):
    """Just enough of ApiService to reach one api.call and one api.admin RPC."""

    def __init__(self) -> None:
        self.endpoints: list[api_types_pb2.Endpoint] = []

    async def ListEndpoints(
        self, request: api_service_pb2.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.ListEndpointsResponse:
        return api_service_pb2.ListEndpointsResponse(endpoints=self.endpoints)

    async def RegisterEndpoint(
        self, request: api_service_pb2.RegisterEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.RegisterEndpointResponse:
        self.endpoints.append(request.endpoint)
        return api_service_pb2.RegisterEndpointResponse(endpoint=request.endpoint, created=True)


async def serve(security: SecuritySettings, tmp_path: Path) -> GrpcServer:
    server = GrpcServer("api_service", "127.0.0.1:0", security=security)
    servicer = Endpoints()  # type: ignore[abstract]  # the other RPCs answer UNIMPLEMENTED
    server.add_service(
        "paca.api.v1.ApiService",
        lambda s: api_service_pb2_grpc.add_ApiServiceServicer_to_server(servicer, s),
    )
    await server.start()
    return server


@pytest.fixture
async def token_server(tmp_path: Path) -> AsyncIterator[GrpcServer]:
    security = SecuritySettings(tokens=TokenTable.load(tokens_file(tmp_path)))
    server = await serve(security, tmp_path)
    yield server
    await server.stop(0)


async def list_endpoints(channel: grpc.aio.Channel) -> int:
    stub = api_service_pb2_grpc.ApiServiceStub(channel)
    reply = await stub.ListEndpoints(api_service_pb2.ListEndpointsRequest(), timeout=5)
    return len(reply.endpoints)


async def register(channel: grpc.aio.Channel) -> None:
    stub = api_service_pb2_grpc.ApiServiceStub(channel)
    endpoint = api_types_pb2.Endpoint(name="e", provider="p", base_url="https://x.example")
    await stub.RegisterEndpoint(
        api_service_pb2.RegisterEndpointRequest(endpoint=endpoint), timeout=5
    )


async def test_missing_or_unknown_token_is_unauthenticated_without_saying_which(
    token_server: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages = set()
    for token in ("", "not-a-known-token"):
        security = SecuritySettings(service_token=token)
        async with open_channel(token_server.bound_address, security) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_endpoints(channel)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        messages.add(caught.value.details())
    assert len(messages) == 1
    assert "not-a-known-token" not in caplog.text


async def test_token_scopes_gate_each_rpc_family(
    token_server: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caller = SecuritySettings(service_token=CALLER_TOKEN)
    async with open_channel(token_server.bound_address, caller) as channel:
        assert await list_endpoints(channel) == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await register(channel)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "api.admin" in (caught.value.details() or "")
    admin = SecuritySettings(service_token=ADMIN_TOKEN)
    async with open_channel(token_server.bound_address, admin) as channel:
        await register(channel)
        assert await list_endpoints(channel) == 1  # api.admin implies api.call
    assert CALLER_TOKEN not in caplog.text
    assert ADMIN_TOKEN not in caplog.text


async def test_health_stays_open_for_probes_without_a_token(token_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(token_server.bound_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="paca.api.v1.ApiService"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_server_accepts_trusting_clients_and_refuses_plaintext(
    certs: Path, tmp_path: Path
) -> None:
    tls = TlsSettings(cert_file=certs / "server.crt", key_file=certs / "server.key")
    server = await serve(SecuritySettings(tls=tls), tmp_path)
    try:
        trusting = SecuritySettings(tls=TlsSettings(ca_file=certs / "ca.crt"))
        async with open_channel(server.bound_address, trusting) as channel:
            assert await list_endpoints(channel) == 0
        async with grpc.aio.insecure_channel(server.bound_address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_endpoints(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_mtls_server_requires_a_client_certificate_from_its_ca(
    certs: Path, tmp_path: Path
) -> None:
    tls = TlsSettings(
        cert_file=certs / "server.crt",
        key_file=certs / "server.key",
        client_ca_file=certs / "ca.crt",
    )
    server = await serve(SecuritySettings(tls=tls), tmp_path)
    try:
        no_cert = SecuritySettings(tls=TlsSettings(ca_file=certs / "ca.crt"))
        async with open_channel(server.bound_address, no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_endpoints(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with_cert = SecuritySettings(
            tls=TlsSettings(
                ca_file=certs / "ca.crt",
                client_cert_file=certs / "client.crt",
                client_key_file=certs / "client.key",
            )
        )
        async with open_channel(server.bound_address, with_cert) as channel:
            assert await list_endpoints(channel) == 0
    finally:
        await server.stop(0)
