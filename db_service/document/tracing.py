"""DB client spans for MongoDB operations, as the database semantic conventions describe.

One CLIENT span per operation (a whole stream for find / aggregate), named
``{db.operation.name} {db.collection.name}`` (``find users``), with ``db.system.name`` mongodb,
``db.namespace`` (the MongoDB database), ``server.address`` / ``server.port`` of the first host
and, on failure, ``error.type`` and ``db.response.status_code`` (the server's error code).
Filters, documents and error messages are never recorded: they carry values.

pymongo has no OpenTelemetry support of its own, and the contrib instrumentation hooks the
driver's global command listener (every client of the process, one span per wire command), so
spans are made here, around what a caller asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.semconv.attributes.db_attributes import DB_COLLECTION_NAME
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from db_service.document.config import MongoDatabaseSettings
from paca_runtime import semconv

tracer = trace.get_tracer(__name__)

MONGODB: Final = "mongodb"
# Our operation names -> the MongoDB command each mostly runs.
COMMANDS: Final = {
    "find_one": "find",
    "count": "aggregate",
    "create_index": "createIndexes",
    "list_indexes": "listIndexes",
    "drop_index": "dropIndexes",
}


def _server(settings: MongoDatabaseSettings) -> dict[str, str | int]:
    first = urlsplit(settings.url).netloc.rpartition("@")[2].split(",")[0]
    parts = urlsplit(f"mongodb://{first}")
    attributes: dict[str, str | int] = {semconv.SERVER_ADDRESS: parts.hostname or first}
    if parts.port is not None:
        attributes[semconv.SERVER_PORT] = parts.port
    return attributes


@contextlib.contextmanager
def operation_span(
    settings: MongoDatabaseSettings, operation: str, collection: str
) -> Iterator[Span]:
    """The span of one operation; the caller marks a failure with :func:`failed`."""
    command = COMMANDS.get(operation, operation)
    attributes: dict[str, str | int] = {
        semconv.DB_SYSTEM_NAME: MONGODB,
        semconv.DB_NAMESPACE: settings.database,
        DB_COLLECTION_NAME: collection,
        semconv.DB_OPERATION_NAME: command,
        **_server(settings),
    }
    with tracer.start_as_current_span(
        f"{command} {collection}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        # Exception messages quote filter values: record the type and code only (failed()).
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def failed(span: Span, error: BaseException, code: str = "") -> None:
    span.set_attribute(semconv.ERROR_TYPE, type(error).__name__)
    if code:
        span.set_attribute(semconv.DB_RESPONSE_STATUS_CODE, code)
    span.set_status(Status(StatusCode.ERROR))
