"""What DbService.Query hands an engine and what it answers, with an engine that records the
call (the real engines: tests/integration/test_db_service.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from google.protobuf import duration_pb2
from paca.db.v1 import db_service_pb2, db_types_pb2, values_pb2

from db_service.backends.base import Backend, ResultSet
from db_service.routing.readpref import ReadOptions, current
from db_service.servicer import DbServicer
from db_service.settings import DatabaseSettings, DbSettings
from db_service.values import encode_row
from tests.unit.idle_backend import IdleBackend

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class Recording(IdleBackend):
    """Answers every statement with ``answer`` and keeps what it was asked."""

    dialect = "sqlite"

    def __init__(self, name: str) -> None:
        super().__init__(name, f"sqlite:///{name}.db")
        self.calls: list[dict[str, Any]] = []
        self.answer = ResultSet()

    async def execute(self, sql: str, params: Sequence[Any], **kwargs: Any) -> ResultSet:
        self.calls.append({"sql": sql, "params": list(params), "options": current(), **kwargs})
        return self.answer


class Engines:
    """The servicer's view of the configured databases, each a recording engine."""

    def __init__(self, settings: DbSettings) -> None:
        self.settings = settings
        self.backends = {db.name: Recording(db.name) for db in settings.databases}

    def __iter__(self) -> Iterator[Backend]:
        return iter(self.backends.values())

    def get(self, name: str) -> Backend:
        return self.backends[name or "main"]


class Caller:
    """A caller with ``remaining_s`` left before its deadline and no credentials."""

    def __init__(self, remaining_s: float | None = None) -> None:
        self.remaining_s = remaining_s

    def time_remaining(self) -> float | None:
        return self.remaining_s

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


SETTINGS = DbSettings(
    listen="127.0.0.1:0",
    databases=(
        DatabaseSettings("main", "sqlite:///main.db"),
        DatabaseSettings("archive", "sqlite:///archive.db", read_only=True),
    ),
    max_rows=100,
    max_bytes=4096,
)


@pytest.fixture
def engines() -> Engines:
    return Engines(SETTINGS)


async def query(
    engines: Engines, request: db_service_pb2.QueryRequest, caller: Caller | None = None
) -> db_service_pb2.QueryResponse:
    servicer = DbServicer(engines)  # type: ignore[arg-type]
    return await servicer.Query(request, caller or Caller())


async def test_the_statement_reaches_the_engine_with_the_service_limits(
    engines: Engines,
) -> None:
    request = db_service_pb2.QueryRequest(
        sql="SELECT * FROM t WHERE id = ?",
        params=[values_pb2.Value(int64_value=7), values_pb2.Value(string_value="x")],
        read_only=True,
    )
    await query(engines, request)
    (call,) = engines.backends["main"].calls
    assert call == {
        "sql": "SELECT * FROM t WHERE id = ?",
        "params": [7, "x"],
        "options": ReadOptions(),
        "read_only": True,
        "max_rows": 100,
        "max_bytes": 4096,
        "timeout_s": None,
    }


async def test_smaller_request_limits_and_the_deadline_are_kept(engines: Engines) -> None:
    request = db_service_pb2.QueryRequest(
        sql="SELECT 1",
        max_rows=5,
        max_bytes=1000,
        timeout=duration_pb2.Duration(seconds=3),
        read_preference=db_types_pb2.READ_PREFERENCE_PRIMARY,
    )
    await query(engines, request, Caller(remaining_s=1.0))
    (call,) = engines.backends["main"].calls
    assert (call["max_rows"], call["max_bytes"]) == (5, 1000)
    assert call["timeout_s"] == pytest.approx(0.98)
    assert call["options"] == ReadOptions(db_types_pb2.READ_PREFERENCE_PRIMARY)
    assert call["read_only"] is False
    assert current() == ReadOptions()  # the request's options end with it


async def test_larger_request_limits_are_capped(engines: Engines) -> None:
    request = db_service_pb2.QueryRequest(
        sql="SELECT 1", read_only=True, max_rows=10**6, max_bytes=10**9
    )
    await query(engines, request)
    (call,) = engines.backends["main"].calls
    assert (call["max_rows"], call["max_bytes"]) == (100, 4096)


async def test_reads_of_a_read_only_database_run_read_only(engines: Engines) -> None:
    await query(engines, db_service_pb2.QueryRequest(database="archive", sql="SELECT 1"))
    (call,) = engines.backends["archive"].calls
    assert call["read_only"] is True


async def test_the_reply_carries_the_engines_result(engines: Engines) -> None:
    engine = engines.backends["main"]
    column = values_pb2.Column(name="id", type=values_pb2.COLUMN_TYPE_INT64)
    engine.answer = ResultSet(
        columns=[column], rows=[encode_row((1,)), encode_row((2,))], rows_affected=-1
    )
    reply = await query(engines, db_service_pb2.QueryRequest(sql="SELECT id FROM t"))
    assert list(reply.columns) == [column]
    assert [r.values[0].int64_value for r in reply.rows] == [1, 2]
    assert (reply.rows_affected, reply.truncated, reply.consistency_token) == (-1, False, "")
    engine.answer = ResultSet(rows=[encode_row((1,))], rows_affected=3, truncated=True)
    reply = await query(engines, db_service_pb2.QueryRequest(sql="SELECT id FROM t"))
    assert (reply.rows_affected, reply.truncated) == (3, True)
