"""Reads over a real PostgreSQL streaming replica: routing, read preference, consistency
tokens, the lag bound. The clusters come from scripts/pg_replica.sh on their own ports."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.routing.positions import parse_token, reached
from db_service.routing.routed import RoutedBackend
from tests.integration.conftest import PgPair, runtime_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def routed_settings(pair: PgPair, **overrides: object) -> DbSettings:
    options: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "databases": (DatabaseSettings("main", pair.primary_url),),
        "replicas": (("main", pair.replica_url),),
        "pool_size": 4,
        "acquire_timeout_s": 1.0,
        "health_interval_s": 0.1,
        "health_timeout_s": 0.5,
        "health_fall": 2,
        "health_rise": 2,
        **overrides,
    }
    return DbSettings(**options)  # type: ignore[arg-type]


@pytest.fixture
async def routed(
    shared_pg_pair: PgPair, tmp_path: Path
) -> AsyncIterator[tuple[DbApp, db_service_pb2_grpc.DbServiceStub]]:
    settings = routed_settings(shared_pg_pair, replica_max_lag_s=0.5)
    app = DbApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            yield app, db_service_pb2_grpc.DbServiceStub(channel)
    finally:
        await app.stop()


def backend_of(app: DbApp) -> RoutedBackend:
    backend = app.databases.get("main")
    assert isinstance(backend, RoutedBackend)
    return backend


def int_value(value: int) -> values_pb2.Value:
    return values_pb2.Value(int64_value=value)


async def count_with_token(
    stub: db_service_pb2_grpc.DbServiceStub, table: str, row_id: int, token: str
) -> int:
    """The rows of ``table`` with ``row_id`` that a read carrying ``token`` sees."""
    read = await stub.Query(
        db_service_pb2.QueryRequest(
            sql=f"SELECT count(*) FROM {table} WHERE id = $1",
            params=[int_value(row_id)],
            read_only=True,
            consistency_token=token,
        )
    )
    return int(read.rows[0].values[0].int64_value)


async def _create_table(stub: db_service_pb2_grpc.DbServiceStub) -> tuple[str, str]:
    """A new table's name (tests share the clusters) and the token of its creation."""
    table = f"items_{uuid.uuid4().hex[:8]}"
    reply = await stub.Execute(
        db_service_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id bigint PRIMARY KEY)")
    )
    return table, reply.consistency_token


async def test_replica_serves_reads_and_primary_serves_writes(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub],
) -> None:
    app, stub = routed
    backend = backend_of(app)
    primary, replica = backend.hosts
    assert (primary.role, replica.role) == ("primary", "replica")
    table, token = await _create_table(stub)
    flavor, position = parse_token(token)
    assert flavor == "pg"
    await stub.Execute(db_service_pb2.ExecuteRequest(sql=f"INSERT INTO {table} VALUES (1)"))
    async with asyncio.timeout(10):
        await backend.replicas.wait_for(lambda: reached("pg", replica.position, position))
    served = (primary.served, replica.served)
    for _ in range(5):
        await stub.Query(db_service_pb2.QueryRequest(sql="SELECT 1", read_only=True))
    await stub.Select(db_service_pb2.SelectRequest(select=db_types_pb2.Select(table=table)))
    assert replica.served - served[1] >= 6
    assert primary.served == served[0]
    # Primary reads on request; a statement not marked read-only is not a read.
    await stub.Query(
        db_service_pb2.QueryRequest(
            sql="SELECT 1", read_only=True, read_preference=db_types_pb2.READ_PREFERENCE_PRIMARY
        )
    )
    await stub.Query(db_service_pb2.QueryRequest(sql="SELECT 1"))
    assert primary.served == served[0] + 2
    stats = await stub.GetStats(db_service_pb2.GetStatsRequest())
    states = {(h.role, h.state) for h in stats.hosts}
    assert states == {
        ("primary", db_types_pb2.HOST_STATE_HEALTHY),
        ("replica", db_types_pb2.HOST_STATE_HEALTHY),
    }


async def test_consistency_token_reads_own_writes_from_the_replica(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub],
) -> None:
    app, stub = routed
    replica = backend_of(app).hosts[1]
    table, _ = await _create_table(stub)
    before = replica.served
    for i in range(20):
        wrote = await stub.Execute(
            db_service_pb2.ExecuteRequest(
                sql=f"INSERT INTO {table} VALUES ($1)", params=[int_value(i)]
            )
        )
        assert await count_with_token(stub, table, i, wrote.consistency_token) == 1, i
    # Caught-up replicas served (some of) them, rather than everything falling to the primary.
    assert replica.served > before


async def test_malformed_consistency_token_is_invalid_argument(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub],
) -> None:
    _, stub = routed
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Query(
            db_service_pb2.QueryRequest(sql="SELECT 1", read_only=True, consistency_token="pg:zz")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "consistency_token" in (caught.value.details() or "")


async def test_lagging_replica_leaves_reads_and_returns(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub], shared_pg_pair: PgPair
) -> None:
    app, stub = routed
    backend = backend_of(app)
    primary, replica = backend.hosts
    table, _ = await _create_table(stub)
    # The replica stops replaying (a real lag: WAL arrives, nothing is applied).
    pair = shared_pg_pair
    await pair.fetchval(pair.replica_port, "SELECT pg_wal_replay_pause()")
    try:
        await stub.Execute(db_service_pb2.ExecuteRequest(sql=f"INSERT INTO {table} VALUES (1)"))
        async with asyncio.timeout(10):
            await backend.replicas.wait_for(
                lambda: replica.state == db_types_pb2.HOST_STATE_LAGGING
            )
        assert replica.lag_s > 0.5
        before = (primary.served, replica.served)
        for _ in range(3):
            await stub.Query(db_service_pb2.QueryRequest(sql="SELECT 1", read_only=True))
        assert (primary.served - before[0], replica.served - before[1]) == (3, 0)
    finally:
        await pair.fetchval(pair.replica_port, "SELECT pg_wal_replay_resume()")
    async with asyncio.timeout(10):
        await backend.replicas.wait_for(lambda: replica.state == db_types_pb2.HOST_STATE_HEALTHY)


async def test_stream_query_reads_from_the_replica_unless_asked_for_the_primary(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub],
) -> None:
    app, stub = routed
    primary, replica = backend_of(app).hosts
    sql = "SELECT n FROM generate_series(1, 500) AS n"
    served = (primary.served, replica.served)
    rows = 0
    async for chunk in stub.StreamQuery(db_service_pb2.StreamQueryRequest(sql=sql, chunk_rows=100)):
        rows += len(chunk.rows)
    assert rows == 500
    assert (primary.served, replica.served) == (served[0], served[1] + 1)
    request = db_service_pb2.StreamQueryRequest(
        sql=sql, read_preference=db_types_pb2.READ_PREFERENCE_PRIMARY
    )
    assert sum([len(c.rows) async for c in stub.StreamQuery(request)]) == 500
    assert (primary.served, replica.served) == (served[0] + 1, served[1] + 1)
