"""Host health on a real primary + replica: probes, live-traffic errors, GetStats and
grpc.health.v1 statuses per database."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2

from db_service import DbApp
from db_service.routing.probes import MysqlProbe, PostgresProbe, ProbeFailed
from db_service.routing.status import health_names
from tests.conftest import backing_url
from tests.integration.conftest import PgPair, runtime_settings
from tests.integration.test_db_replica_routing import backend_of, routed_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SERVING = health_pb2.HealthCheckResponse.SERVING


async def _host_states(
    stub: db_service_pb2_grpc.DbServiceStub,
) -> dict[str, db_types_pb2.HostHealth]:
    stats = await stub.GetStats(db_service_pb2.GetStatsRequest())
    return {h.role: h for h in stats.hosts}


async def test_probes_take_a_dead_replica_out_and_bring_it_back(
    shared_pg_pair: PgPair, tmp_path: Path
) -> None:
    pg_pair = shared_pg_pair
    app = DbApp(routed_settings(pg_pair), runtime_settings(tmp_path))
    await app.start()
    replicas = backend_of(app).replicas
    replica = backend_of(app).hosts[1]
    writes, reads = health_names("main")
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            stub = db_service_pb2_grpc.DbServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            for name in (writes, reads):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == SERVING
            await pg_pair.run("kill", "replica", str(pg_pair.directory))
            async with asyncio.timeout(10):
                await replicas.wait_for(lambda: not replica.usable)
            hosts = await _host_states(stub)
            assert hosts["replica"].state == db_types_pb2.HOST_STATE_UNHEALTHY
            assert hosts["replica"].consecutive_failures >= 2
            assert hosts["replica"].ejections == 1
            assert hosts["primary"].state == db_types_pb2.HOST_STATE_HEALTHY
            assert "secret" not in str(hosts)
            # The same state goes to the monitor with the service's other figures.
            up = {m.labels["role"]: m.gauge for m in app.figures() if m.name == "db_host_up"}
            assert up == {"primary": 1.0, "replica": 0.0}
            # Reads still have a host (the primary): both names stay SERVING.
            for name in (writes, reads):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == SERVING

            await pg_pair.run("start", "replica", str(pg_pair.directory))
            async with asyncio.timeout(10):
                await replicas.wait_for(lambda: replica.usable)
            hosts = await _host_states(stub)
            assert hosts["replica"].state == db_types_pb2.HOST_STATE_HEALTHY
            assert hosts["replica"].consecutive_failures == 0
    finally:
        await app.stop()


async def test_errors_on_live_reads_eject_a_host_between_probes(
    shared_pg_pair: PgPair, tmp_path: Path
) -> None:
    pg_pair = shared_pg_pair
    # Probes far apart: only live traffic can notice the dead replica in time.
    settings = routed_settings(pg_pair, health_interval_s=60.0, health_fall=2)
    app = DbApp(settings, runtime_settings(tmp_path))
    await app.start()
    primary, replica = backend_of(app).hosts
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            stub = db_service_pb2_grpc.DbServiceStub(channel)
            query = db_service_pb2.QueryRequest(sql="SELECT 1", read_only=True)
            await stub.Query(query)
            assert replica.served == 1
            await pg_pair.run("kill", "replica", str(pg_pair.directory))
            served = primary.served
            for _ in range(4):
                # Each read that meets the dead replica is retried once on the primary.
                reply = await stub.Query(query)
                assert reply.rows[0].values[0].int64_value == 1
            assert not replica.usable
            assert replica.health.ejections == 1
            assert primary.served == served + 4
    finally:
        await app.stop()
        await pg_pair.run("start", "replica", str(pg_pair.directory))


async def test_database_without_replicas_is_serving_under_both_names(tmp_path: Path) -> None:
    from db_service import DatabaseSettings, DbSettings

    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
    )
    app = DbApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in health_names("main"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == SERVING
            stats = await db_service_pb2_grpc.DbServiceStub(channel).GetStats(
                db_service_pb2.GetStatsRequest()
            )
            assert list(stats.hosts) == []
    finally:
        await app.stop()


async def test_mariadb_probe_reports_a_writable_server_and_its_flavor() -> None:
    probe = MysqlProbe(backing_url("PACA_TEST_MYSQL_URL"))
    try:
        result = await probe.check(timeout_s=5.0)
    finally:
        await probe.aclose()
    assert result.primary
    assert probe.flavor in {"mariadb", "mysql"}


async def test_probe_of_a_host_that_is_gone_fails_within_its_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    probe = PostgresProbe(f"postgresql://postgres:secret@127.0.0.1:{port}/postgres")
    started = time.monotonic()
    with pytest.raises(ProbeFailed) as caught:
        await probe.check(timeout_s=1.0)
    assert time.monotonic() - started < 1.5
    assert "secret" not in str(caught.value)
