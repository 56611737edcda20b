"""The whole stack with mTLS on every hop and bearer-token scopes, as real processes."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.client import ClientOptions, PermissionDenied, Unauthenticated, connect
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc
from paca.monitor.v1 import monitor_service_pb2, monitor_service_pb2_grpc, monitor_types_pb2

from paca_runtime.security import token_digest
from paca_runtime.stack import ServiceProcess
from tests.conftest import Upstream, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SERVICE_TOKEN = "svc-7d1e0b"
READER_TOKEN = "reader-55aa"


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    subprocess.run(["bash", str(ROOT / "scripts" / "make_certs.sh"), str(directory)], check=True)
    return directory


@pytest.fixture
async def secure_stack(tmp_path: Path, certs: Path) -> AsyncIterator[dict[str, ServiceProcess]]:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f"""
[[token]]
name = "services"
sha256 = "{token_digest(SERVICE_TOKEN).hex()}"
scopes = ["api.admin", "db.write", "monitor.report", "monitor.read"]

[[token]]
name = "reader"
sha256 = "{token_digest(READER_TOKEN).hex()}"
scopes = ["db.read"]
"""
    )
    env = {
        "PACA_STATE_DIR": str(tmp_path),
        "PACA_MONITOR_LISTEN": "127.0.0.1:0",
        "PACA_METRICS_LISTEN": "127.0.0.1:0",
        "PACA_DB_LISTEN": "127.0.0.1:0",
        "PACA_API_LISTEN": "127.0.0.1:0",
        "MONITOR_INTERVAL": "0.5",
        "PACA_TLS_CERT_FILE": str(certs / "server.crt"),
        "PACA_TLS_KEY_FILE": str(certs / "server.key"),
        "PACA_TLS_CLIENT_CA_FILE": str(certs / "ca.crt"),
        "PACA_TLS_CA_FILE": str(certs / "ca.crt"),
        "PACA_TLS_CLIENT_CERT_FILE": str(certs / "client.crt"),
        "PACA_TLS_CLIENT_KEY_FILE": str(certs / "client.key"),
        "PACA_AUTH_TOKENS_FILE": str(tokens),
        "PACA_SERVICE_TOKEN": SERVICE_TOKEN,
    }
    started: dict[str, ServiceProcess] = {}
    try:
        for module in ("monitor", "db_service", "api_service"):
            process = ServiceProcess(module, env)
            await process.start()
            started[module] = process
            if module == "monitor":
                env["PACA_MONITOR_ADDRESS"] = process.addresses["grpc"]
            if module == "db_service":
                env["PACA_DB_ADDRESS"] = process.addresses["grpc"]
        yield started
    finally:
        for module in ("api_service", "db_service", "monitor"):
            if module in started:
                assert await started[module].stop() == 0


def options(certs: Path, token: str) -> ClientOptions:
    return ClientOptions(
        timeout_s=10,
        token=token,
        ca_file=certs / "ca.crt",
        cert_file=certs / "client.crt",
        key_file=certs / "client.key",
    )


async def test_every_hop_is_mtls_with_scoped_tokens(
    secure_stack: dict[str, ServiceProcess], certs: Path, upstream: Upstream
) -> None:
    api_address = secure_stack["api_service"].addresses["grpc"]
    db_address = secure_stack["db_service"].addresses["grpc"]
    monitor_address = secure_stack["monitor"].addresses["grpc"]

    async with connect(api_address, options(certs, SERVICE_TOKEN)) as channel:
        reply = await api_service_pb2_grpc.ApiServiceStub(channel).Call(
            api_service_pb2.CallRequest(url=f"{upstream.url}/echo", provider="secure")
        )
        assert reply.status_code == 200

    async with connect(db_address, options(certs, READER_TOKEN)) as channel:
        db = db_service_pb2_grpc.DbServiceStub(channel)

        async def recorded() -> bool:
            rows = await db.Query(
                db_service_pb2.QueryRequest(
                    sql="SELECT count(*) FROM external_api_logs WHERE provider = 'secure'",
                    read_only=True,
                )
            )
            return bool(rows.rows[0].values[0].int64_value == 1)

        await eventually(recorded)  # api_service reached db_service over mTLS with its token
        with pytest.raises(PermissionDenied):  # a read token may not write
            await db.Query(db_service_pb2.QueryRequest(sql="DELETE FROM external_api_logs"))

    async with connect(api_address, options(certs, "wrong-token")) as channel:
        with pytest.raises(Unauthenticated):
            await api_service_pb2_grpc.ApiServiceStub(channel).ListEndpoints(
                api_service_pb2.ListEndpointsRequest()
            )

    async with grpc.aio.insecure_channel(api_address) as channel:  # plaintext is refused
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api_service_pb2_grpc.ApiServiceStub(channel).ListEndpoints(
                api_service_pb2.ListEndpointsRequest(), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    async with connect(monitor_address, options(certs, SERVICE_TOKEN)) as channel:
        monitor = monitor_service_pb2_grpc.MonitorServiceStub(channel)

        async def both_report() -> bool:  # reports travel over mTLS with the service token
            status = await monitor.GetStatus(monitor_service_pb2.GetStatusRequest())
            up = {
                s.service for s in status.services if s.state == monitor_types_pb2.SERVICE_STATE_UP
            }
            return {"api_service", "db_service"} <= up

        await eventually(both_report)
