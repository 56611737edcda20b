"""Per-request limits: the statement time limit, required SQL and the byte limit of a result."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import duration_pb2
from paca.db.v1 import db_service_pb2, values_pb2

from db_service.backends.base import limit_bytes
from db_service.limits import request_timeout, required_sql, statement_timeout
from paca_runtime.errors import InvalidArgument

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class Deadline:
    """The one thing the limits ask of a gRPC context: the caller's time left."""

    def __init__(self, remaining_s: float | None) -> None:
        self.remaining_s = remaining_s

    def time_remaining(self) -> float | None:
        return self.remaining_s


def timed(seconds: float | None) -> db_service_pb2.QueryRequest:
    request = db_service_pb2.QueryRequest(sql="SELECT 1")
    if seconds is not None:
        request.timeout.FromMilliseconds(int(seconds * 1000))
    return request


@pytest.mark.parametrize(
    ("timeout_s", "remaining_s", "expected"),
    [
        (None, None, None),  # no limit at all
        (None, 5.0, 4.98),  # the caller's deadline, less a margin
        (None, 0.005, 0.0045),  # the margin is at most a tenth of what is left
        (None, 0.0, 0.001),  # never zero: the engine would read it as "no limit"
        (2.0, None, 2.0),
        (2.0, 10.0, 2.0),  # the request's own limit is the tighter one
        (2.0, 1.0, 0.98),  # the deadline is the tighter one
    ],
)
def test_request_timeout_is_the_tighter_of_the_request_and_the_deadline(
    timeout_s: float | None, remaining_s: float | None, expected: float | None
) -> None:
    request = timed(timeout_s)
    found = request_timeout(request, Deadline(remaining_s))
    assert found == pytest.approx(expected)
    same = statement_timeout(
        request.timeout,
        request.HasField("timeout"),
        Deadline(remaining_s),
    )
    assert same == found


def test_a_timeout_that_is_not_positive_names_the_field() -> None:
    request = db_service_pb2.QueryRequest(sql="SELECT 1", timeout=duration_pb2.Duration())
    with pytest.raises(InvalidArgument) as caught:
        request_timeout(request, Deadline(5.0))
    assert caught.value.field == "timeout"
    with pytest.raises(InvalidArgument) as nested:
        statement_timeout(
            duration_pb2.Duration(seconds=-1),
            True,
            Deadline(None),
            "statement.timeout",
        )
    assert nested.value.field == "statement.timeout"


def test_an_unset_timeout_is_not_read() -> None:
    class Unset:
        """A request whose unset timeout must not be built (reading it costs a message)."""

        def HasField(self, name: str) -> bool:
            assert name == "timeout"
            return False

        @property
        def timeout(self) -> Any:
            raise AssertionError("an unset timeout was read")

    assert request_timeout(Unset(), Deadline(1.0)) == pytest.approx(0.98)


@pytest.mark.parametrize("sql", ["", " ", "\n\t ", "\u2003\u00a0"])
def test_blank_sql_is_refused_naming_the_field(sql: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        required_sql(sql, "statement.sql")
    assert caught.value.field == "statement.sql"


def test_sql_is_passed_on_as_written() -> None:
    sql = "  SELECT 1\n"
    assert required_sql(sql) is sql


def row(text: str) -> values_pb2.Row:
    return values_pb2.Row(values=[values_pb2.Value(string_value=text)])


def test_the_first_row_is_kept_whatever_its_size() -> None:
    big = [row("x" * 100)]
    assert limit_bytes(big, 10) == (big, False)
    rows = [row("x" * 100), row("y")]
    assert limit_bytes(rows, 10) == (rows[:1], True)


def test_rows_are_cut_where_they_pass_the_limit() -> None:
    rows = [row(str(i) * 10) for i in range(5)]
    size = rows[0].ByteSize()
    assert limit_bytes(rows, size * 3) == (rows[:3], True)
    assert limit_bytes(rows, size * 5) == (rows, False)
    assert limit_bytes(rows, 0) == (rows, False)  # 0: no limit
    assert limit_bytes([], 10) == ([], False)
