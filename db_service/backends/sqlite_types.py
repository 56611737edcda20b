"""SQLite value types: what goes in as text, and how declared column types read back.

Types: SQLite stores five storage classes, so the other kinds go in as text (timestamps as UTC
ISO 8601 with microseconds, which also sorts) and come back typed by the column's declared type,
through converters registered with ``sqlite3.register_converter`` (process-wide, used only by
connections opened with ``detect_types``): BOOLEAN / BOOL, DECIMAL, DATE, TIME, TIMESTAMP /
TIMESTAMPTZ / DATETIME, JSON, UUID. Declare exact decimals as ``DECIMAL TEXT``: the first word
picks the converter and TEXT affinity keeps every digit (a bare DECIMAL column has NUMERIC
affinity, where SQLite itself keeps only 15 significant digits).
"""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from paca.db.v1 import values_pb2

from db_service import values
from paca_runtime.errors import InvalidArgument


def adapt(value: Any, field: str) -> Any:
    """SQLite stores five types; everything else goes in as its text form."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal | uuid.UUID | values.JsonText):
        return str(value)
    if isinstance(value, dt.datetime):
        # One sortable text form, the same as the schema's strftime defaults.
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        raise InvalidArgument(field, "SQLite has no array type")
    return value


def _timestamp(raw: bytes) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(raw.decode())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _uuid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw) if len(raw) == 16 else uuid.UUID(raw.decode())


# Declared column type (first word, case-insensitive) -> how its stored value reads back.
CONVERTERS: dict[str, Any] = {
    "BOOLEAN": lambda raw: raw not in (b"0", b"0.0", b"", b"false", b"FALSE"),
    "BOOL": lambda raw: raw not in (b"0", b"0.0", b"", b"false", b"FALSE"),
    "DECIMAL": lambda raw: decimal.Decimal(raw.decode()),
    "DATE": lambda raw: dt.date.fromisoformat(raw.decode()),
    "TIME": lambda raw: dt.time.fromisoformat(raw.decode()),
    "TIMESTAMP": _timestamp,
    "TIMESTAMPTZ": _timestamp,
    "DATETIME": _timestamp,
    "JSON": lambda raw: values.JsonText(raw.decode()),
    "UUID": _uuid,
}
for _name, _converter in CONVERTERS.items():
    sqlite3.register_converter(_name, _converter)

# The engine type reported in Column.db_type, by the Python type a value reads back as.
_DB_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOLEAN"),
    (int, "INTEGER"),
    (float, "REAL"),
    (values.JsonText, "JSON"),
    (str, "TEXT"),
    (bytes, "BLOB"),
    (decimal.Decimal, "DECIMAL"),
    (dt.datetime, "TIMESTAMP"),
    (dt.date, "DATE"),
    (dt.time, "TIME"),
    (uuid.UUID, "UUID"),
)


def _db_type(value: Any) -> str:
    return next((name for kind, name in _DB_TYPES if isinstance(value, kind)), "")


def encode_row(row: Sequence[Any]) -> values_pb2.Row:
    return values_pb2.Row(values=[values.encode(v) for v in row])


def column_metadata(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[values_pb2.Column]:
    columns = [values_pb2.Column(name=n) for n in names]
    for i, column in enumerate(columns):
        # SQLite types values, not columns: the first non-NULL value speaks for its column.
        first = next((row[i] for row in rows if row[i] is not None), None)
        if first is not None:
            column.type = values.column_type_of(values.encode(first))
            column.db_type = _db_type(first)
    return columns
