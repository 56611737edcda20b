"""A Transaction's commit carries a consistency token, on a real PostgreSQL primary + replica: a
read passing it sees the committed rows from whichever host serves it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from db_service import DbApp
from db_service.routing.positions import parse_token
from db_service.routing.routed import RoutedBackend
from tests.integration.conftest import PgPair, runtime_settings
from tests.integration.test_db_replica_routing import count_with_token, int_value, routed_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Request = db_service_pb2.TransactionRequest


@pytest.fixture
async def routed(
    shared_pg_pair: PgPair, tmp_path: Path
) -> AsyncIterator[tuple[DbApp, db_service_pb2_grpc.DbServiceStub]]:
    app = DbApp(routed_settings(shared_pg_pair, replica_max_lag_s=0.5), runtime_settings(tmp_path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            yield app, db_service_pb2_grpc.DbServiceStub(channel)
    finally:
        await app.stop()


async def exchange(
    call: grpc.aio.StreamStreamCall, request: Request
) -> db_service_pb2.TransactionResponse:
    await call.write(request)
    reply = await call.read()
    assert isinstance(reply, db_service_pb2.TransactionResponse)
    return reply


async def test_commit_token_lets_a_read_see_the_committed_row_from_any_host(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub],
) -> None:
    app, stub = routed
    backend = app.databases.get("main")
    assert isinstance(backend, RoutedBackend)
    replica = backend.hosts[1]
    table = f"tx_token_{uuid.uuid4().hex[:8]}"
    await stub.Execute(db_service_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id bigint)"))
    before = replica.served
    for i in range(10):
        call = stub.Transaction()
        await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
        statement = db_service_pb2.TransactionStatement(
            sql=f"INSERT INTO {table} VALUES ($1)", params=[int_value(i)]
        )
        await exchange(call, Request(statement=statement))
        committed = await exchange(call, Request(commit=True))
        assert committed.committed
        flavor, _ = parse_token(committed.consistency_token)
        assert flavor == "pg"
        assert await count_with_token(stub, table, i, committed.consistency_token) == 1, i
    # The reads were not all sent to the primary: the replica served the caught-up ones.
    assert replica.served > before


async def test_a_read_only_transaction_commits_without_a_token(
    routed: tuple[DbApp, db_service_pb2_grpc.DbServiceStub],
) -> None:
    _, stub = routed
    call = stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction(read_only=True)))
    await exchange(call, Request(statement=db_service_pb2.TransactionStatement(sql="SELECT 1")))
    committed = await exchange(call, Request(commit=True))
    assert committed.committed
    assert committed.consistency_token == ""
