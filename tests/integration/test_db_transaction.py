"""DbService.Transaction on every SQL engine: isolation, savepoints, and rollback of abandoned or
idle transactions with the connection back in the pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, values_pb2

from db_service.app import DbApp
from db_service.settings import DatabaseSettings, DbSettings
from tests.conftest import eventually
from tests.integration.conftest import runtime_settings
from tests.integration.test_db_service import DIALECTS, PLACEHOLDERS, temporary_database
from tests.integration.test_db_statements import SLOW

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Request = db_service_pb2.TransactionRequest
Value = values_pb2.Value


@dataclass
class Served:
    dialect: str
    app: DbApp
    stub: db_service_pb2_grpc.DbServiceStub


@contextlib.asynccontextmanager
async def serve(dialect: str, tmp_path: Path, **settings: object) -> AsyncIterator[Served]:
    async with temporary_database(dialect, tmp_path) as url:
        config = DbSettings(
            listen="127.0.0.1:0",
            databases=(DatabaseSettings("main", url),),
            pool_size=4,
            **settings,  # type: ignore[arg-type]
        )
        app = DbApp(config, runtime_settings(tmp_path))
        await app.start()
        try:
            async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
                stub = db_service_pb2_grpc.DbServiceStub(channel)
                await stub.Execute(
                    db_service_pb2.ExecuteRequest(
                        sql="CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"
                    )
                )
                yield Served(dialect, app, stub)
        finally:
            await app.stop()


@pytest.fixture(params=DIALECTS)
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(request.param, tmp_path) as result:
        yield result


def insert(dialect: str, key: int, value: str = "v") -> Request:
    a, b = PLACEHOLDERS[dialect]
    return Request(
        statement=db_service_pb2.TransactionStatement(
            sql=f"INSERT INTO t (k, v) VALUES ({a}, {b})",
            params=[Value(int64_value=key), Value(string_value=value)],
        )
    )


async def keys(stub: db_service_pb2_grpc.DbServiceStub) -> list[int]:
    """Committed keys, read on another connection than any open transaction's."""
    reply = await stub.Query(
        db_service_pb2.QueryRequest(sql="SELECT k FROM t ORDER BY k", read_only=True)
    )
    return [row.values[0].int64_value for row in reply.rows]


async def in_use(stub: db_service_pb2_grpc.DbServiceStub) -> int:
    return int((await stub.GetStats(db_service_pb2.GetStatsRequest())).pools[0].in_use)


async def all_returned(stub: db_service_pb2_grpc.DbServiceStub) -> None:
    """Wait for every connection to be back in the pool: one that ended a transaction is
    reset in the background first."""

    async def returned() -> bool:
        return await in_use(stub) == 0

    await eventually(returned)


async def exchange(
    call: grpc.aio.StreamStreamCall, request: Request
) -> db_service_pb2.TransactionResponse:
    await call.write(request)
    reply = await call.read()
    assert isinstance(reply, db_service_pb2.TransactionResponse)
    return reply


async def test_uncommitted_write_is_invisible_to_other_connections_until_commit(
    served: Served,
) -> None:
    call = served.stub.Transaction()
    await exchange(
        call,
        Request(
            begin=db_service_pb2.BeginTransaction(
                isolation_level=db_service_pb2.ISOLATION_LEVEL_READ_COMMITTED
            )
        ),
    )
    reply = await exchange(call, insert(served.dialect, 1))
    assert reply.rows_affected == 1
    inside = await exchange(
        call, Request(statement=db_service_pb2.TransactionStatement(sql="SELECT count(*) FROM t"))
    )
    assert inside.rows[0].values[0].int64_value == 1  # the transaction sees its own write
    assert await keys(served.stub) == []  # nobody else does
    assert (await exchange(call, Request(commit=True))).committed
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert await keys(served.stub) == [1]
    await all_returned(served.stub)


async def test_rollback_to_savepoint_undoes_only_what_came_after_it(served: Served) -> None:
    call = served.stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
    await exchange(call, insert(served.dialect, 1))
    await exchange(call, Request(savepoint=db_service_pb2.SavepointAction(name="before_two")))
    await exchange(call, insert(served.dialect, 2))
    await exchange(
        call,
        Request(rollback_to_savepoint=db_service_pb2.SavepointAction(name="before_two")),
    )
    await exchange(
        call, Request(release_savepoint=db_service_pb2.SavepointAction(name="before_two"))
    )
    await exchange(call, insert(served.dialect, 3))
    await exchange(call, Request(commit=True))
    assert await keys(served.stub) == [1, 3]


async def test_explicit_rollback_discards_the_writes(served: Served) -> None:
    call = served.stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
    await exchange(call, insert(served.dialect, 1))
    assert (await exchange(call, Request(rollback=True))).rolled_back
    assert await keys(served.stub) == []


async def test_abandoned_transaction_is_rolled_back_and_its_connection_returned(
    served: Served,
) -> None:
    call = served.stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
    await exchange(call, insert(served.dialect, 1))
    assert await in_use(served.stub) == 1
    call.cancel()  # the client goes away mid-transaction

    await all_returned(served.stub)
    assert await keys(served.stub) == []
    figures = (await served.stub.GetStats(db_service_pb2.GetStatsRequest())).figures[0]
    assert figures.transactions_open == 0
    # The returned connection serves a new transaction (SQLite: the single writer is free).
    again = served.stub.Transaction()
    await exchange(again, Request(begin=db_service_pb2.BeginTransaction()))
    await exchange(again, insert(served.dialect, 2))
    await exchange(again, Request(commit=True))
    assert await keys(served.stub) == [2]


async def test_failed_statement_ends_the_stream_and_rolls_back(served: Served) -> None:
    call = served.stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
    await exchange(call, insert(served.dialect, 1))
    await call.write(insert(served.dialect, 1))  # duplicate key
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await keys(served.stub) == []
    await all_returned(served.stub)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_idle_transaction_is_rolled_back_after_the_idle_limit(
    dialect: str, tmp_path: Path
) -> None:
    async with serve(dialect, tmp_path, transaction_idle_timeout_s=0.3) as served:
        call = served.stub.Transaction()
        await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
        await exchange(call, insert(dialect, 1))
        # The client stays connected but sends nothing.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.ABORTED
        assert "rolled back" in (caught.value.details() or "")
        assert await keys(served.stub) == []
        await all_returned(served.stub)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (Request(commit=True), "begin"),
        (Request(), "begin"),
    ],
)
async def test_a_stream_must_start_with_begin(
    request_: Request, field: str, tmp_path: Path
) -> None:
    async with serve("sqlite", tmp_path) as served:
        call = served.stub.Transaction()
        await call.write(request_)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (caught.value.details() or "")


async def test_savepoint_names_are_identifiers_only(tmp_path: Path) -> None:
    async with serve("sqlite", tmp_path) as served:
        call = served.stub.Transaction()
        await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
        await exchange(call, insert("sqlite", 1))
        await call.write(Request(savepoint=db_service_pb2.SavepointAction(name="x; DROP TABLE t")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "savepoint.name" in (caught.value.details() or "")
        assert await keys(served.stub) == []  # table still there, nothing committed


async def test_read_only_transaction_refuses_writes(served: Served) -> None:
    call = served.stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction(read_only=True)))
    await call.write(insert(served.dialect, 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await keys(served.stub) == []


async def test_a_statement_past_its_timeout_is_cancelled_and_ends_the_transaction(
    served: Served,
) -> None:
    call = served.stub.Transaction()
    await exchange(call, Request(begin=db_service_pb2.BeginTransaction()))
    await exchange(call, insert(served.dialect, 1))
    await call.write(
        Request(
            statement=db_service_pb2.TransactionStatement(
                sql=SLOW[served.dialect], timeout=duration_pb2.Duration(nanos=200_000_000)
            )
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await keys(served.stub) == []

    await all_returned(served.stub)
