"""Mapping between the wire's typed ``Value`` and Python values the drivers understand.

Decoding gives the richest Python type (Decimal, datetime, date, time, UUID); each backend then
adapts what its driver cannot take (SQLite has no DECIMAL or DATE, so those go in as text).
Encoding goes the other way for result rows, so a value read back has the kind it was written with
wherever the engine keeps the type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from paca.db.v1 import values_pb2

from paca_runtime.errors import InvalidArgument

ColumnType = values_pb2.ColumnType


class JsonText(str):
    """JSON text that should be bound as JSON, not as a plain string."""

    __slots__ = ()


def decode(value: values_pb2.Value, field: str) -> Any:
    """The Python value of a wire value; ``field`` names it in errors (e.g. ``params[2]``)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "int64_value":
        return value.int64_value
    if kind == "double_value":
        return value.double_value
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "decimal_value":
        try:
            number = decimal.Decimal(value.decimal_value)
        except decimal.InvalidOperation:
            raise InvalidArgument(field, f"not a decimal: {value.decimal_value!r}") from None
        if not number.is_finite():
            raise InvalidArgument(field, "decimal must be finite")
        return number
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=dt.UTC)
    if kind == "json_value":
        try:
            json.loads(value.json_value)
        except ValueError as exc:
            raise InvalidArgument(field, f"not valid JSON: {exc}") from None
        return JsonText(value.json_value)
    if kind == "date_value":
        try:
            return dt.date.fromisoformat(value.date_value)
        except ValueError:
            raise InvalidArgument(field, f"not a date: {value.date_value!r}") from None
    if kind == "time_value":
        try:
            return dt.time.fromisoformat(value.time_value)
        except ValueError:
            raise InvalidArgument(field, f"not a time: {value.time_value!r}") from None
    if kind == "uuid_value":
        try:
            return uuid.UUID(value.uuid_value)
        except ValueError:
            raise InvalidArgument(field, f"not a UUID: {value.uuid_value!r}") from None
    if kind == "array_value":
        return [decode(v, f"{field}[{i}]") for i, v in enumerate(value.array_value.values)]
    raise InvalidArgument(field, f"unsupported value kind {kind}")  # pragma: no cover


# Kinds whose Python value is the field itself: nothing to check, no field name to build.
_PLAIN_KINDS = frozenset(
    {"bool_value", "int64_value", "double_value", "string_value", "bytes_value"}
)


def decode_all(values: Sequence[values_pb2.Value], field: str) -> list[Any]:
    decoded: list[Any] = []
    append = decoded.append
    for value in values:
        kind = value.WhichOneof("kind")
        if kind in _PLAIN_KINDS:
            append(getattr(value, kind))
        else:
            append(decode(value, f"{field}[{len(decoded)}]"))
    return decoded


# The wire value of the commonest exact types, found with one dict lookup (bool before int
# matters only for isinstance; type() tells them apart). Subclasses (JsonText) take the chain.
_EXACT: dict[type, Callable[[Any], values_pb2.Value]] = {
    int: lambda obj: values_pb2.Value(int64_value=obj),
    str: lambda obj: values_pb2.Value(string_value=obj),
    float: lambda obj: values_pb2.Value(double_value=obj),
    bool: lambda obj: values_pb2.Value(bool_value=obj),
}


def encode(obj: Any) -> values_pb2.Value:
    """The wire value of a Python value read from a driver."""
    exact = _EXACT.get(type(obj))
    if exact is not None:
        return exact(obj)
    if obj is None:
        return values_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(obj, bool):
        return values_pb2.Value(bool_value=obj)
    if isinstance(obj, int):
        return values_pb2.Value(int64_value=obj)
    if isinstance(obj, float):
        return values_pb2.Value(double_value=obj)
    if isinstance(obj, JsonText):
        return values_pb2.Value(json_value=str(obj))
    if isinstance(obj, str):
        return values_pb2.Value(string_value=obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return values_pb2.Value(bytes_value=bytes(obj))
    if isinstance(obj, decimal.Decimal):
        return values_pb2.Value(decimal_value=str(obj))
    if isinstance(obj, dt.datetime):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(obj if obj.tzinfo else obj.replace(tzinfo=dt.UTC))
        return values_pb2.Value(timestamp_value=stamp)
    if isinstance(obj, dt.date):
        return values_pb2.Value(date_value=obj.isoformat())
    if isinstance(obj, dt.time):
        return values_pb2.Value(time_value=obj.isoformat())
    if isinstance(obj, uuid.UUID):
        return values_pb2.Value(uuid_value=str(obj))
    if isinstance(obj, dict):
        return values_pb2.Value(json_value=json.dumps(obj))
    if isinstance(obj, list | tuple):
        return values_pb2.Value(array_value=values_pb2.ValueList(values=[encode(v) for v in obj]))
    return values_pb2.Value(string_value=str(obj))


# The same values added in place to a row: no message built and then copied in.
_ADD_EXACT: dict[type, Callable[[Callable[..., values_pb2.Value], Any], object]] = {
    int: lambda add, obj: add(int64_value=obj),
    str: lambda add, obj: add(string_value=obj),
    float: lambda add, obj: add(double_value=obj),
    bool: lambda add, obj: add(bool_value=obj),
}


def encode_row(record: Iterable[Any]) -> values_pb2.Row:
    """The wire row of a driver's record, each value as :func:`encode` makes it.

    Values of the common types are built inside the row (``values.add``) rather than as
    messages of their own that the row then copies: most of the cost of a large result.
    """
    row = values_pb2.Row()
    items = row.values
    add = items.add
    for obj in record:
        exact = _ADD_EXACT.get(type(obj))
        if exact is not None:
            exact(add, obj)
        else:
            items.append(encode(obj))
    return row


_KIND_TO_COLUMN_TYPE = {
    "bool_value": ColumnType.COLUMN_TYPE_BOOL,
    "int64_value": ColumnType.COLUMN_TYPE_INT64,
    "double_value": ColumnType.COLUMN_TYPE_DOUBLE,
    "string_value": ColumnType.COLUMN_TYPE_STRING,
    "bytes_value": ColumnType.COLUMN_TYPE_BYTES,
    "decimal_value": ColumnType.COLUMN_TYPE_DECIMAL,
    "timestamp_value": ColumnType.COLUMN_TYPE_TIMESTAMP,
    "json_value": ColumnType.COLUMN_TYPE_JSON,
    "date_value": ColumnType.COLUMN_TYPE_DATE,
    "time_value": ColumnType.COLUMN_TYPE_TIME,
    "uuid_value": ColumnType.COLUMN_TYPE_UUID,
    "array_value": ColumnType.COLUMN_TYPE_ARRAY,
}


def column_type_of(value: values_pb2.Value) -> values_pb2.ColumnType.ValueType:
    """The column type a value implies; UNSPECIFIED for NULL."""
    kind = value.WhichOneof("kind")
    return _KIND_TO_COLUMN_TYPE.get(kind or "", ColumnType.COLUMN_TYPE_UNSPECIFIED)
