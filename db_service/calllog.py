"""Storing api_service's call records in ``external_api_logs``.

Records are keyed by their client-generated ``record_id``; an insert that meets an existing id is
skipped by the engine (INSERT OR IGNORE / ON CONFLICT DO NOTHING / INSERT IGNORE), so a batch that
api_service re-sends after a lost reply or from its spool is stored exactly once. A batch is
validated whole before anything is written: bad input changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from typing import Any

from paca.db.v1 import db_types_pb2

from db_service.backends.base import Backend
from paca_runtime.errors import InvalidArgument

MAX_PROVIDER_CHARS = 50
MAX_BATCH = 5000

_COLUMNS = (
    "record_id, provider, success, is_validation_error, response_time_ms, data, error_message,"
    " created_at, endpoint, status_code, method, url, trace_id, attempts"
)
_INSERT = {
    "sqlite": (
        f"INSERT OR IGNORE INTO external_api_logs ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"
    ),
    "postgresql": (
        f"INSERT INTO external_api_logs ({_COLUMNS}) VALUES "
        f"({', '.join(f'${i}' for i in range(1, 15))}) ON CONFLICT (record_id) DO NOTHING"
    ),
    "mysql": f"INSERT IGNORE INTO external_api_logs ({_COLUMNS}) VALUES ({', '.join(['%s'] * 14)})",
}


def _row(record: db_types_pb2.ApiCallRecord, field: str, now: dt.datetime) -> tuple[Any, ...]:
    try:
        record_id = uuid.UUID(record.record_id)
    except ValueError:
        raise InvalidArgument(f"{field}.record_id", "must be a UUID") from None
    if not record.provider:
        raise InvalidArgument(f"{field}.provider", "required")
    if len(record.provider) > MAX_PROVIDER_CHARS:
        raise InvalidArgument(f"{field}.provider", f"at most {MAX_PROVIDER_CHARS} characters")
    if not math.isfinite(record.response_time_ms) or record.response_time_ms < 0:
        raise InvalidArgument(f"{field}.response_time_ms", "must be a finite number >= 0")
    data = record.data_json if record.HasField("data_json") else None
    if data is not None:
        try:
            json.loads(data)
        except ValueError:
            raise InvalidArgument(f"{field}.data_json", "not valid JSON") from None
    created = record.create_time.ToDatetime(dt.UTC) if record.HasField("create_time") else now
    return (
        record_id,
        record.provider,
        record.success,
        record.is_validation_error,
        record.response_time_ms,
        data,
        record.error_message if record.HasField("error_message") else None,
        created,
        record.endpoint,
        record.status_code,
        record.method,
        record.url,
        record.trace_id,
        record.attempts,
    )


async def store_api_calls(
    backend: Backend, records: Sequence[db_types_pb2.ApiCallRecord]
) -> tuple[int, int]:
    """Insert records, skipping ids already stored; returns (inserted, duplicates)."""
    if len(records) > MAX_BATCH:
        raise InvalidArgument("records", f"at most {MAX_BATCH} records per batch")
    now = dt.datetime.now(dt.UTC)
    rows = [_row(record, f"records[{i}]", now) for i, record in enumerate(records)]
    if not rows:
        return 0, 0
    inserted = await backend.executemany(_INSERT[backend.dialect], rows)
    return inserted, len(rows) - inserted
