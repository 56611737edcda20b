"""Typed values: what goes over the wire comes back as the same kind and value."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest
from paca.db.v1 import values_pb2

from db_service import values
from paca_runtime.errors import InvalidArgument

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value",
    [
        values_pb2.Value(bool_value=True),
        values_pb2.Value(int64_value=-(2**63)),
        values_pb2.Value(double_value=1.5e300),
        values_pb2.Value(string_value="ünïcode ☃"),
        values_pb2.Value(bytes_value=b"\x00\xff"),
        values_pb2.Value(decimal_value="12345678901234567890.123456789"),
        values_pb2.Value(json_value='{"big": 9007199254740993}'),
        values_pb2.Value(date_value="2026-11-23"),
        values_pb2.Value(time_value="23:59:59.999999"),
        values_pb2.Value(uuid_value="12345678-1234-5678-1234-567812345678"),
        values_pb2.Value(
            array_value=values_pb2.ValueList(values=[values_pb2.Value(int64_value=1)])
        ),
    ],
)
def test_decode_then_encode_round_trips(value: values_pb2.Value) -> None:
    assert values.encode(values.decode(value, "v")) == value


def test_timestamp_round_trips_as_utc() -> None:
    value = values_pb2.Value()
    value.timestamp_value.FromDatetime(dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC))
    decoded = values.decode(value, "v")
    assert decoded == dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert values.encode(decoded) == value


def test_null_and_rich_types_decode_to_python_types() -> None:
    assert values.decode(values_pb2.Value(), "v") is None
    assert isinstance(values.decode(values_pb2.Value(decimal_value="1.10"), "v"), decimal.Decimal)
    assert isinstance(values.decode(values_pb2.Value(uuid_value=str(uuid.uuid4())), "v"), uuid.UUID)


@pytest.mark.parametrize(
    "value",
    [
        values_pb2.Value(decimal_value="NaN"),
        values_pb2.Value(decimal_value="1,5"),
        values_pb2.Value(json_value="{"),
        values_pb2.Value(date_value="2026-13-01"),
        values_pb2.Value(time_value="25:00"),
        values_pb2.Value(uuid_value="nope"),
    ],
)
def test_malformed_value_names_its_field(value: values_pb2.Value) -> None:
    with pytest.raises(InvalidArgument) as caught:
        values.decode_all([values_pb2.Value(int64_value=1), value], "params")
    assert caught.value.field == "params[1]"
