"""A FanOut's trace, as the real processes export it, holds each upstream call (every HTTP
attempt) and each DB write of their call records (call-log flush → RecordApiCalls →
db_service → DB client span) under the FanOut's server span."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.proto.trace.v1 import trace_pb2
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc

from tests.conftest import Upstream
from tests.e2e.conftest import Stack
from tests.e2e.test_trace_semconv import (
    CLIENT,
    SECRET,
    SERVER,
    Received,
    Tree,
    attributes,
    in_trace,
    traced_client,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

FAN_OUT = "/paca.api.v1.ApiService/FanOut"
RECORD = "/paca.db.v1.DbService/RecordApiCalls"


def descends_from(tree: Tree, span: trace_pb2.Span, ancestor: bytes) -> bool:
    parent = span.parent_span_id
    while parent:
        if parent == ancestor:
            return True
        found = tree.spans.get(parent)
        if found is None:
            return False
        parent = found[1].parent_span_id
    return False


async def test_fan_out_trace_shows_every_upstream_call_and_every_db_write_under_it(
    stack: Stack, upstream: Upstream
) -> None:
    paths = ["/echo/one", "/echo/two", "/flaky/fan?fail=1"]  # the last one is retried once
    request = api_service_pb2.FanOutRequest(
        calls=[
            api_service_pb2.CallRequest(
                url=f"{upstream.url}{path}{'&' if '?' in path else '?'}api_key={SECRET}"
            )
            for path in paths
        ]
    )
    provider, exporter = traced_client()
    interceptors = aio_client_interceptors(tracer_provider=provider)  # type: ignore[no-untyped-call]
    async with grpc.aio.insecure_channel(
        stack.address("api_service"), interceptors=interceptors
    ) as channel:
        with provider.get_tracer("test").start_as_current_span("client") as root:
            reply = await api_service_pb2_grpc.ApiServiceStub(channel).FanOut(request, timeout=10)
    assert reply.succeeded == 3
    trace_id = root.get_span_context().trace_id

    def complete(spans: Received) -> bool:
        ours = in_trace(spans, trace_id)
        flushed = sum(
            int(attributes(s).get("calllog.records", 0))
            for _, s in ours
            if s.name == "calllog.flush"
        )
        flushes = sum(1 for _, s in ours if s.name == "calllog.flush")
        writes = sum(1 for svc, s in ours if svc == "db_service" and "external_api_logs" in s.name)
        # Spans export as they end, in any order across processes: every hop of every flush.
        records = sum(1 for _, s in ours if s.name == RECORD)
        fanned = any(s.name == FAN_OUT and s.kind == SERVER for _, s in ours)
        return fanned and flushed == len(paths) and writes == flushes and records == 2 * flushes

    await stack.receiver.wait_for(complete, timeout_s=30)
    received = in_trace(stack.receiver.spans, trace_id)
    tree = Tree(received)
    client_rpc = next(s for s in exporter.get_finished_spans() if s.name == FAN_OUT)
    fan_out = tree.child(client_rpc.context.span_id.to_bytes(8, "big"), "api_service", FAN_OUT)
    assert fan_out.kind == SERVER
    assert attributes(fan_out)["rpc.method"] == "FanOut"

    # Each call is an api.call span right under the FanOut, each attempt a GET under its call.
    calls = [s for _, s in received if s.name == "api.call" and s.parent_span_id == fan_out.span_id]
    assert len(calls) == len(paths)
    attempts_by_path: dict[str, int] = {}
    for call in calls:
        for _, attempt in received:
            if attempt.name == "GET" and attempt.parent_span_id == call.span_id:
                assert attempt.kind == CLIENT
                url = str(attributes(attempt)["url.full"])
                assert "api_key=REDACTED" in url
                path = url.removeprefix(upstream.url).split("?")[0]
                attempts_by_path[path] = attempts_by_path.get(path, 0) + 1
    assert attempts_by_path == {"/echo/one": 1, "/echo/two": 1, "/flaky/fan": 2}

    # Each flush of their records is in the FanOut's tree, and leads to a DB write.
    flushes = [s for _, s in received if s.name == "calllog.flush"]
    assert flushes
    for flush in flushes:
        assert descends_from(tree, flush, fan_out.span_id), tree.dump()
        record = tree.child(flush.span_id, "api_service", RECORD)
        assert record.kind == CLIENT
        db_server = tree.child(record.span_id, "db_service", RECORD)
        records = int(attributes(flush)["calllog.records"])
        name = "INSERT external_api_logs" if records == 1 else "BATCH INSERT external_api_logs"
        write = tree.child(db_server.span_id, "db_service", name)
        assert write.kind == CLIENT
        assert attributes(write)["db.system.name"] == "sqlite"
        if records > 1:
            assert attributes(write)["db.operation.batch.size"] == records
    assert SECRET.encode() not in b"".join(s.SerializeToString() for _, s in received)
