"""MongoDB Extended JSON in and out, with bad input named by the request field.

Requests may be relaxed or canonical Extended JSON (``bson.json_util`` reads both). Replies are
canonical: it is the only form that keeps every BSON type apart (Int32 / Int64 / Double,
dates outside 1970..9999 as ``$numberLong``), so a document read, changed by a client and written
back is exactly the document that was stored. Dates decode to timezone-aware UTC datetimes, or
to ``DatetimeMS`` when Python's datetime cannot hold them; UUIDs use the standard subtype 4.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from bson import json_util
from bson.binary import UuidRepresentation
from bson.codec_options import DatetimeConversion
from bson.errors import BSONError

from paca_runtime.errors import InvalidArgument

JSON_IN: Final = json_util.JSONOptions(
    tz_aware=True,
    tzinfo=dt.UTC,
    uuid_representation=UuidRepresentation.STANDARD,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)
JSON_OUT: Final = json_util.CANONICAL_JSON_OPTIONS.with_options(
    tz_aware=True,
    tzinfo=dt.UTC,
    uuid_representation=UuidRepresentation.STANDARD,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)
# Index key values MongoDB accepts besides 1 / -1.
INDEX_TYPES: Final = frozenset({"text", "hashed", "2d", "2dsphere"})


def loads(text: str, field: str) -> Any:
    """Any Extended JSON value; INVALID_ARGUMENT naming ``field`` when it is not one."""
    try:
        return json_util.loads(text, json_options=JSON_IN)
    except (ValueError, TypeError, KeyError, BSONError) as exc:
        raise InvalidArgument(field, f"not MongoDB Extended JSON: {exc}") from None


def document(text: str, field: str, *, required: bool = False) -> dict[str, Any]:
    """An Extended JSON object; empty text is ``{}`` unless ``required``."""
    if not text.strip():
        if required:
            raise InvalidArgument(field, "required")
        return {}
    value = loads(text, field)
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def pipeline(text: str, field: str) -> list[dict[str, Any]]:
    """A required Extended JSON array of one-key stage objects."""
    if not text.strip():
        raise InvalidArgument(field, "required")
    value = loads(text, field)
    if not isinstance(value, list):
        raise InvalidArgument(field, f"must be a JSON array of stages, got {type(value).__name__}")
    for i, stage in enumerate(value):
        if not isinstance(stage, dict) or len(stage) != 1 or not next(iter(stage)).startswith("$"):
            raise InvalidArgument(f"{field}[{i}]", 'a stage is one {"$stage": ...} object')
    return value


def update(text: str, field: str) -> dict[str, Any] | list[dict[str, Any]]:
    """Update operators (every key starts with "$") or an update pipeline (an array)."""
    if text.lstrip().startswith("["):
        return pipeline(text, field)
    value = document(text, field, required=True)
    plain = [key for key in value if not key.startswith("$")]
    if plain or not value:
        raise InvalidArgument(
            field,
            "must hold update operators ($set, $inc, ...); use replacement for a whole document"
            + (f", found field {plain[0]!r}" if plain else ""),
        )
    return value


def replacement(text: str, field: str) -> dict[str, Any]:
    value = document(text, field, required=True)
    operators = [key for key in value if key.startswith("$")]
    if operators:
        raise InvalidArgument(
            field, f"a replacement holds no update operators, found {operators[0]}"
        )
    return value


def sort(text: str, field: str) -> list[tuple[str, Any]]:
    """Sort keys in order; each 1, -1 or a {"$meta": ...} object."""
    keys = list(document(text, field).items())
    for key, direction in keys:
        if not _direction(direction) and not (isinstance(direction, dict) and "$meta" in direction):
            raise InvalidArgument(f"{field}.{key}", f"must be 1 or -1, got {dumps(direction)}")
    return keys


def index_keys(text: str, field: str) -> list[tuple[str, Any]]:
    """Index keys in order; each 1, -1 or an index type ("text", "hashed", ...)."""
    keys = list(document(text, field, required=True).items())
    if not keys:
        raise InvalidArgument(field, "at least one key")
    for key, kind in keys:
        if not _direction(kind) and kind not in INDEX_TYPES:
            raise InvalidArgument(
                f"{field}.{key}", f"must be 1, -1 or one of {sorted(INDEX_TYPES)}, got {kind!r}"
            )
    return keys


def dumps(value: Any) -> str:
    """Canonical Extended JSON of a document or value."""
    return json_util.dumps(value, json_options=JSON_OUT)


def _direction(value: Any) -> bool:
    # bool is an int: true must not pass for 1.
    return isinstance(value, int) and not isinstance(value, bool) and value in (1, -1)
