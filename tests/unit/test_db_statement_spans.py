"""The DB span around an engine's ``execute``: none under an unsampled call, one with the
statement's attributes under a sampled one, one (not two) when an engine calls itself."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from db_service.backends.base import ResultSet
from db_service.errors import DbUnavailable
from db_service.tracing import DB_RESPONSE_RETURNED_ROWS
from db_service.values import encode_row
from paca_runtime import semconv
from tests.unit.idle_backend import IdleBackend

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class Engine(IdleBackend):
    """An engine that answers every statement with ``rows`` after one suspension, fails a
    statement with "fail" in it, and runs "twice" as two nested statements of its own."""

    dialect = "postgresql"

    def __init__(self) -> None:
        super().__init__("main", "postgresql://app@db.internal:6543/orders")
        self.rows = [encode_row((1, "one")), encode_row((2, "two"))]

    async def execute(self, sql: str, params: Sequence[Any], **kwargs: Any) -> ResultSet:
        await asyncio.sleep(0)
        if "fail" in sql:
            raise DbUnavailable("engine gone")
        if "twice" in sql:
            await self.execute("SELECT 1", params, **kwargs)
        return ResultSet(rows=list(self.rows))


def caller(sampled: bool) -> trace.Span:
    """The span of the RPC that runs the statement, as a caller's headers would give it."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags))


async def run(engine: Engine, sql: str) -> ResultSet:
    return await engine.execute(sql, [7], read_only=True, max_rows=10)


async def test_no_span_under_an_unsampled_call(spans: InMemorySpanExporter) -> None:
    engine = Engine()
    with trace.use_span(caller(sampled=False)):
        result = await run(engine, "SELECT * FROM t WHERE id = $1")
        with pytest.raises(DbUnavailable):
            await run(engine, "SELECT fail")
    assert len(result.rows) == 2
    assert spans.get_finished_spans() == ()


async def test_a_sampled_call_gets_one_client_span_per_statement(
    spans: InMemorySpanExporter,
) -> None:
    engine = Engine()
    with trace.use_span(caller(sampled=True)):
        result = await run(engine, "SELECT * FROM t WHERE id = $1")
    assert len(result.rows) == 2
    (span,) = spans.get_finished_spans()
    assert span.kind == SpanKind.CLIENT
    assert span.name == "SELECT t"
    assert span.parent is not None
    assert span.parent.span_id == 0xDEF
    attributes = dict(span.attributes or {})
    assert attributes[semconv.DB_SYSTEM_NAME] == semconv.POSTGRESQL
    assert attributes[semconv.DB_NAMESPACE] == "orders"
    assert attributes[semconv.SERVER_PORT] == 6543
    assert attributes[semconv.DB_QUERY_TEXT] == "SELECT * FROM t WHERE id = $1"
    assert attributes[DB_RESPONSE_RETURNED_ROWS] == 2


async def test_a_failed_statement_is_an_error_span_and_the_error_reaches_the_caller(
    spans: InMemorySpanExporter,
) -> None:
    with trace.use_span(caller(sampled=True)), pytest.raises(DbUnavailable):
        await run(Engine(), "SELECT fail")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})[semconv.ERROR_TYPE] == "DbUnavailable"


async def test_an_engine_calling_its_own_execute_makes_one_span(
    spans: InMemorySpanExporter,
) -> None:
    with trace.use_span(caller(sampled=True)):
        await run(Engine(), "SELECT twice")
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})[semconv.DB_QUERY_TEXT] == "SELECT twice"


async def test_a_statement_started_in_a_task_is_decided_in_the_callers_context(
    spans: InMemorySpanExporter,
) -> None:
    engine = Engine()
    with trace.use_span(caller(sampled=True)):
        task = asyncio.ensure_future(run(engine, "SELECT 1"))
    with trace.use_span(caller(sampled=False)):
        await task
    (span,) = spans.get_finished_spans()
    assert span.parent is not None
    assert span.parent.span_id == 0xDEF
