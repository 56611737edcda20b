"""Reads over a real MariaDB GTID replica: routing, consistency tokens, a stopped applier and
primary detection by ``@@global.read_only``. The servers come from scripts/mariadb_replica.sh
on their own ports; the shared server on 3306 is not touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomysql
import grpc
import pytest
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.routing.positions import parse_token, reached
from db_service.routing.routed import RoutedBackend
from tests.conftest import backing_url
from tests.integration.conftest import ROOT, _free_port, runtime_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SCRIPT = ROOT / "scripts" / "mariadb_replica.sh"
Stub = db_service_pb2_grpc.DbServiceStub


@dataclass
class MariaPair:
    """A MariaDB primary and its GTID replica (scripts/mariadb_replica.sh)."""

    directory: Path
    primary_port: int
    replica_port: int

    @staticmethod
    def url(port: int) -> str:
        return f"mysql://paca:paca@127.0.0.1:{port}/paca_test"

    async def admin(self, which: str, sql: str) -> Any:
        """Run ``sql`` as root over the node's own socket; the first value of its first row."""
        conn = await aiomysql.connect(
            unix_socket=str(self.directory / f"{which}.sock"), user="root", autocommit=True
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql)
                row = await cursor.fetchone()
            return row[0] if row else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def maria_pair() -> Iterator[MariaPair]:
    """One pair for the module; every test leaves both servers running, writable as before and
    replicating when it ends."""
    # Same rule as the shared engines: skip locally when none is set up, fail under CI.
    backing_url("PACA_TEST_MYSQL_URL")
    if not (shutil.which("mariadbd") or os.access("/usr/sbin/mariadbd", os.X_OK)):
        message = "MariaDB server binaries are not installed (scripts/backing_services.sh up)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = ROOT / "var" / "mariadb_replica" / uuid.uuid4().hex[:8]
    primary_port = _free_port(53306)
    replica_port = _free_port(53307 if primary_port != 53307 else 0)
    try:
        started = subprocess.run(
            [str(SCRIPT), "up", str(directory), str(primary_port), str(replica_port)],
            check=False,
            timeout=20,
            capture_output=True,
            text=True,
        )
        assert started.returncode == 0, started.stderr
        # The script keeps the servers in /tmp when the mysql user cannot reach the checkout.
        yield MariaPair(directory.resolve(), primary_port, replica_port)
    finally:
        subprocess.run([str(SCRIPT), "down", str(directory)], check=False, timeout=20)


@pytest.fixture
async def routed(
    maria_pair: MariaPair, tmp_path: Path
) -> AsyncIterator[tuple[RoutedBackend, Stub]]:
    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(DatabaseSettings("main", maria_pair.url(maria_pair.primary_port)),),
        replicas=(("main", maria_pair.url(maria_pair.replica_port)),),
        pool_size=4,
        acquire_timeout_s=1.0,
        health_interval_s=0.1,
        health_timeout_s=0.5,
        health_fall=2,
        health_rise=2,
        # Seconds_Behind_Master counts whole seconds and reads 1 while an event is applied on a
        # busy machine: a bound below a few seconds would make a healthy replica flap.
        replica_max_lag_s=5.0,
    )
    app = DbApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        backend = app.databases.get("main")
        assert isinstance(backend, RoutedBackend)
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            yield backend, db_service_pb2_grpc.DbServiceStub(channel)
    finally:
        await app.stop()


async def _scalar(stub: Stub, sql: str, **options: Any) -> values_pb2.Value:
    reply = await stub.Query(db_service_pb2.QueryRequest(sql=sql, read_only=True, **options))
    value: values_pb2.Value = reply.rows[0].values[0]
    return value


async def _create_table(stub: Stub) -> tuple[str, str]:
    """A new table's name (the tests share the servers) and the token of its creation."""
    table = f"items_{uuid.uuid4().hex[:8]}"
    reply = await stub.Execute(
        db_service_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id bigint PRIMARY KEY)")
    )
    return table, reply.consistency_token


async def test_replica_serves_reads_and_primary_serves_writes(
    routed: tuple[RoutedBackend, Stub], maria_pair: MariaPair
) -> None:
    backend, stub = routed
    primary, replica = backend.hosts
    assert (primary.role, replica.role) == ("primary", "replica")
    assert primary.probe.flavor == "mariadb"
    table, token = await _create_table(stub)
    flavor, position = parse_token(token)
    assert flavor == "mariadb"
    wrote = await stub.Execute(
        db_service_pb2.ExecuteRequest(sql=f"INSERT INTO {table} VALUES (@@server_id)")
    )
    assert wrote.rows_affected == 1
    # The write ran on server 1 (the primary) and moved its GTID position.
    assert not reached("mariadb", position, parse_token(wrote.consistency_token)[1])
    async with asyncio.timeout(10):
        await backend.replicas.wait_for(
            lambda: (
                reached("mariadb", replica.position, parse_token(wrote.consistency_token)[1])
                and replica.state == db_types_pb2.HOST_STATE_HEALTHY
            )
        )
    served = (primary.served, replica.served)
    for _ in range(3):
        port = await _scalar(stub, "SELECT @@port")
        assert port.int64_value == maria_pair.replica_port
    assert (await _scalar(stub, "SELECT @@server_id")).int64_value == 2
    selected = await stub.Select(
        db_service_pb2.SelectRequest(select=db_types_pb2.Select(table=table))
    )
    assert [r.values[0].int64_value for r in selected.rows] == [1]
    # (Select may also read the table's columns, on the replica as well.)
    assert primary.served == served[0]
    assert replica.served - served[1] >= 5
    # Primary reads on request; a statement not marked read-only is not a read.
    asked = await _scalar(
        stub, "SELECT @@server_id", read_preference=db_types_pb2.READ_PREFERENCE_PRIMARY
    )
    assert asked.int64_value == 1
    plain = await stub.Query(db_service_pb2.QueryRequest(sql="SELECT @@server_id"))
    assert plain.rows[0].values[0].int64_value == 1


async def test_consistency_token_reads_own_writes(routed: tuple[RoutedBackend, Stub]) -> None:
    backend, stub = routed
    replica = backend.hosts[1]
    table, _ = await _create_table(stub)
    before = replica.served
    for i in range(20):
        wrote = await stub.Execute(
            db_service_pb2.ExecuteRequest(sql=f"INSERT INTO {table} VALUES ({i})")
        )
        assert wrote.consistency_token.startswith("mariadb:")
        count = await _scalar(
            stub,
            f"SELECT count(*) FROM {table} WHERE id = {i}",
            consistency_token=wrote.consistency_token,
        )
        assert count.int64_value == 1, i
    # Caught-up replicas served (some of) them, rather than everything falling to the primary.
    assert replica.served > before


async def test_stopped_applier_keeps_read_your_writes(
    routed: tuple[RoutedBackend, Stub], maria_pair: MariaPair
) -> None:
    backend, stub = routed
    primary, replica = backend.hosts
    table, _ = await _create_table(stub)
    await maria_pair.admin("replica", "STOP SLAVE SQL_THREAD")
    try:
        wrote = await stub.Execute(
            db_service_pb2.ExecuteRequest(sql=f"INSERT INTO {table} VALUES (7)")
        )
        # At once, before any probe saw the stopped applier: the token alone keeps the read off
        # the replica, which has not applied the write.
        served = primary.served
        count = await _scalar(
            stub, f"SELECT count(*) FROM {table}", consistency_token=wrote.consistency_token
        )
        assert count.int64_value == 1
        assert primary.served == served + 1
        # The probes see the applier stopped (no Seconds_Behind_Master): the replica leaves
        # reads, and a plain read sees the write too.
        async with asyncio.timeout(10):
            await backend.replicas.wait_for(
                lambda: replica.state == db_types_pb2.HOST_STATE_LAGGING
            )
        served_replica = replica.served
        assert (await _scalar(stub, "SELECT @@server_id")).int64_value == 1
        assert replica.served == served_replica
    finally:
        await maria_pair.admin("replica", "START SLAVE SQL_THREAD")
    async with asyncio.timeout(10):
        await backend.replicas.wait_for(lambda: replica.state == db_types_pb2.HOST_STATE_HEALTHY)
    count = await _scalar(
        stub, f"SELECT count(*) FROM {table}", consistency_token=wrote.consistency_token
    )
    assert count.int64_value == 1


async def test_read_only_host_is_never_elected_primary(
    routed: tuple[RoutedBackend, Stub], maria_pair: MariaPair
) -> None:
    backend, stub = routed
    primary, replica = backend.hosts
    await maria_pair.admin("primary", "SET GLOBAL read_only = 1")
    try:
        async with asyncio.timeout(10):
            await backend.replicas.wait_for(lambda: backend.replicas.primary is None)
        rounds = backend.replicas.rounds
        async with asyncio.timeout(10):
            await backend.replicas.wait_for(lambda: backend.replicas.rounds >= rounds + 5)
        # Both hosts up, both read-only: nobody takes writes, and the replica never did.
        assert backend.replicas.primary is None
        assert primary.usable
        assert replica.usable
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(db_service_pb2.ExecuteRequest(sql="CREATE TABLE never (id int)"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # Reads go on.
        assert (await _scalar(stub, "SELECT 1")).int64_value == 1
    finally:
        await maria_pair.admin("primary", "SET GLOBAL read_only = 0")
    async with asyncio.timeout(10):
        await backend.replicas.wait_for(lambda: backend.replicas.primary is primary)
    assert replica.role == "replica"
    _, token = await _create_table(stub)
    assert token.startswith("mariadb:")


@pytest.mark.parametrize(
    "token", ["mysql:3E11FA47-71CA-11E1-9E33-C80AA9429562:1-77", "pg:16/B374D848", "mariadb:x"]
)
async def test_foreign_consistency_token_is_invalid_argument(
    routed: tuple[RoutedBackend, Stub], token: str
) -> None:
    _, stub = routed
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _scalar(stub, "SELECT 1", consistency_token=token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "consistency_token" in (caught.value.details() or "")
