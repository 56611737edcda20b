"""Scale-out on one machine: 3 api_service and 2 db_service processes behind client-side
round-robin keep serving one load while a replica of each is taken away."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.client import connect

from paca_runtime.stack import ServiceProcess
from tests.conftest import Upstream, backing_url, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CALLS = 300


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    admin_url = backing_url("PACA_TEST_POSTGRES_URL")
    name = f"paca_scale_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def target(processes: list[ServiceProcess]) -> str:
    return "ipv4:" + ",".join(p.addresses["grpc"] for p in processes)


async def test_load_survives_losing_one_replica_of_each_service(
    tmp_path: Path, upstream: Upstream, postgres_url: str
) -> None:
    base = {
        "PACA_STATE_DIR": str(tmp_path),
        "PACA_MONITOR_ADDRESS": "",
        "PACA_DB_URL": postgres_url,
        "PACA_DB_LISTEN": "127.0.0.1:0",
        "PACA_API_LISTEN": "127.0.0.1:0",
        "PACA_CALLLOG_FLUSH_INTERVAL_S": "0.05",
        "PACA_SHUTDOWN_GRACE_S": "5",
        "PACA_SHUTDOWN_DRAIN_S": "1",
    }
    started: list[ServiceProcess] = []
    try:
        dbs = [ServiceProcess("db_service", base) for _ in range(2)]
        for db in dbs:
            await db.start()
            started.append(db)
        apis = [
            ServiceProcess(
                "api_service",
                {
                    **base,
                    "PACA_DB_ADDRESS": target(dbs),
                    "PACA_CALLLOG_SPOOL_DIR": str(tmp_path / f"spool-{i}"),
                },
            )
            for i in range(3)
        ]
        for api in apis:
            await api.start()
            started.append(api)

        sent = 0
        failures: list[str] = []
        # The typed client balances round-robin and health-checks each replica, so a replica
        # that drains (NOT_SERVING for PACA_SHUTDOWN_DRAIN_S) gets no new calls before it stops.
        async with connect(target(apis)) as channel:
            stub = api_service_pb2_grpc.ApiServiceStub(channel)

            async def worker() -> None:
                nonlocal sent
                while sent < CALLS:
                    sent += 1
                    number = sent
                    if number == CALLS // 3:
                        dbs[0].kill()  # a crash: no goodbye
                    if number == 2 * CALLS // 3:
                        apis[0].signal(signal.SIGTERM)  # a rolling restart: drains
                    try:
                        reply = await stub.Call(
                            api_service_pb2.CallRequest(
                                url=f"{upstream.url}/echo?n={number}", provider="scale"
                            ),
                            timeout=10,
                        )
                        assert reply.status_code == 200
                    except grpc.aio.AioRpcError as error:
                        failures.append(f"{number}: {error.code().name} {error.details()}")

            await asyncio.gather(*(worker() for _ in range(8)))
        assert failures == []
        assert await apis[0].wait() == 0

        conn = await asyncpg.connect(postgres_url)
        try:

            async def all_recorded() -> bool:
                count = await conn.fetchval(
                    "SELECT count(*) FROM external_api_logs WHERE provider = 'scale'"
                )
                return int(count) == CALLS

            await eventually(all_recorded, timeout_s=30)
        finally:
            await conn.close()
    finally:
        for process in reversed(started):
            await process.stop()
