"""Read-only databases and per-client limits (read-only clients, raw SQL off), with auth on."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from db_service.app import DbApp
from db_service.settings import ClientPolicy, DatabaseSettings, DbSettings
from paca_runtime.channels import open_channel
from paca_runtime.security import SecuritySettings, TokenEntry, TokenTable, token_digest
from tests.integration.conftest import runtime_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# Token name -> (token, scopes). Every client has db.write; the db_service policy limits them.
CLIENTS = {
    "app": ("app-token", {"db.write"}),
    "reports": ("reports-token", {"db.write"}),
    "etl": ("etl-token", {"db.write"}),
    "admin": ("admin-token", {"db.admin"}),
}
Value = values_pb2.Value


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[DbApp]:
    tokens = TokenTable(
        tuple(
            TokenEntry(name, token_digest(token), frozenset(scopes))
            for name, (token, scopes) in CLIENTS.items()
        )
    )
    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(
            DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),
            DatabaseSettings("archive", f"sqlite:///{tmp_path / 'archive.db'}", read_only=True),
        ),
        pool_size=2,
        clients=(
            ClientPolicy("reports", read_only=True),
            ClientPolicy("etl", raw_sql=False),
        ),
    )
    runtime = dataclasses.replace(
        runtime_settings(tmp_path), security=SecuritySettings(tokens=tokens)
    )
    served = DbApp(settings, runtime)
    await served.start()
    try:
        async with stub_for(served, "admin") as stub:
            await stub.Execute(
                db_service_pb2.ExecuteRequest(sql="CREATE TABLE t (k INTEGER PRIMARY KEY)")
            )
        yield served
    finally:
        await served.stop()


def stub_for(app: DbApp, client: str) -> _Stub:
    return _Stub(app.server.bound_address, CLIENTS[client][0])


class _Stub:
    """A DbService stub with a client's token, as an async context manager."""

    def __init__(self, address: str, token: str) -> None:
        self._channel = open_channel(address, SecuritySettings(service_token=token))

    async def __aenter__(self) -> db_service_pb2_grpc.DbServiceStub:
        channel = await self._channel.__aenter__()
        return db_service_pb2_grpc.DbServiceStub(channel)

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.__aexit__(*exc)


def insert(key: int, database: str = "") -> db_service_pb2.ExecuteRequest:
    return db_service_pb2.ExecuteRequest(
        database=database, sql="INSERT INTO t (k) VALUES (?)", params=[Value(int64_value=key)]
    )


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_a_read_only_client_reads_but_every_write_is_refused_by_name(app: DbApp) -> None:
    async with stub_for(app, "reports") as stub:
        reply = await stub.Query(db_service_pb2.QueryRequest(sql="SELECT count(*) FROM t"))
        assert reply.rows[0].values[0].int64_value == 0
        error = await refused(stub.Execute(insert(1)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == "client 'reports' is read-only: Execute refused"
        error = await refused(
            stub.Insert(
                db_service_pb2.InsertRequest(
                    insert=db_types_pb2.Insert(
                        table="t",
                        columns=["k"],
                        rows=[values_pb2.Row(values=[Value(int64_value=1)])],
                    )
                )
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "Insert refused" in (error.details() or "")
        # Query's SQL runs read-only for this client: the engine refuses a write in it.
        error = await refused(stub.Query(db_service_pb2.QueryRequest(sql="DELETE FROM t")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        call = stub.Transaction()
        await call.write(db_service_pb2.TransactionRequest(begin=db_service_pb2.BeginTransaction()))
        error = await refused(call.read())
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "Transaction refused" in (error.details() or "")
    async with stub_for(app, "app") as stub:
        await stub.Execute(insert(1))  # an unlimited client still writes


async def test_a_client_without_raw_sql_uses_only_the_builder(app: DbApp) -> None:
    async with stub_for(app, "etl") as stub:
        for call in (
            stub.Query(db_service_pb2.QueryRequest(sql="SELECT 1")),
            stub.Execute(insert(1)),
        ):
            error = await refused(call)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "may not send SQL" in (error.details() or "")
        stream = stub.StreamQuery(db_service_pb2.StreamQueryRequest(sql="SELECT 1"))
        error = await refused(stream.read())
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.Insert(
            db_service_pb2.InsertRequest(
                insert=db_types_pb2.Insert(
                    table="t",
                    columns=["k"],
                    rows=[values_pb2.Row(values=[Value(int64_value=7)])],
                )
            )
        )
        reply = await stub.Select(
            db_service_pb2.SelectRequest(select=db_types_pb2.Select(table="t", columns=["k"]))
        )
        assert [r.values[0].int64_value for r in reply.rows] == [7]


async def test_a_read_only_database_refuses_writes_from_everyone(app: DbApp) -> None:
    async with stub_for(app, "admin") as stub:
        error = await refused(stub.Execute(insert(1, database="archive")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == "database 'archive' is read-only: Execute refused"
        reply = await stub.Query(
            db_service_pb2.QueryRequest(database="archive", sql="SELECT 1 AS one")
        )
        assert reply.rows[0].values[0].int64_value == 1
        await stub.Execute(insert(1))  # main is writable
