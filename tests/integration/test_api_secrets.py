"""No secret given to api_service reaches a log line, a span or a call record.

Calls carry an API key in the query, a bearer token in the Authorization header and a password
in the URL's userinfo, through success, retries, failure, refusal and the cache; then every log
record (formatted as the JSON the process writes, extras included), every span attribute and
event of this process, every column of every stored call record, the error messages and GetStats
are searched for each secret (and the base64 of the basic-auth pair).
"""

from __future__ import annotations

import base64
import logging

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from api_service import ApiApp
from paca_runtime.logs import JsonFormatter
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

QUERY_KEY = "qK3y-7f3a9c"
BEARER = "bEaReR-51d0e2"
PASSWORD = "pAsS-88c1b4"
SECRETS = [
    QUERY_KEY,
    BEARER,
    PASSWORD,
    base64.b64encode(f"user:{PASSWORD}".encode()).decode(),
]


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


def logged_and_traced(
    caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> tuple[list[str], list[str]]:
    """Every log line as written, and every finished span (name, attributes, events, status
    description) as text: what a scan for secrets reads."""
    formatter = JsonFormatter("api_service")
    log_lines = [formatter.format(record) for record in caplog.records]
    span_texts = [
        str(
            (
                span.name,
                dict(span.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in span.events],
                span.status.description,
            )
        )
        for span in spans.get_finished_spans()
    ]
    return log_lines, span_texts


async def test_no_secret_appears_in_logs_spans_call_records_errors_or_stats(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    host = upstream.url.removeprefix("http://")
    bearer = api_types_pb2.Header(name="Authorization", value=f"Bearer {BEARER}")
    cached = api_types_pb2.Endpoint(
        name="secret.cached",
        provider="secret",
        base_url=upstream.url,
        path="/flaky/cached",
        cache=api_types_pb2.CachePolicy(enabled=True, override_upstream=True),
    )
    cached.cache.ttl.FromSeconds(60)
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=cached))
    calls = [
        api_service_pb2.CallRequest(url=f"{upstream.url}/flaky/ok?api_key={QUERY_KEY}&q=1"),
        api_service_pb2.CallRequest(url=f"{upstream.url}/flaky/auth", headers=[bearer]),
        api_service_pb2.CallRequest(url=f"http://user:{PASSWORD}@{host}/flaky/basic"),
        # Retried twice, then a success: each attempt is a span.
        api_service_pb2.CallRequest(
            url=f"{upstream.url}/flaky/retried?fail=2&token={QUERY_KEY}", headers=[bearer]
        ),
        api_service_pb2.CallRequest(
            url=f"{upstream.url}/status/500?key={QUERY_KEY}", headers=[bearer]
        ),
        api_service_pb2.CallRequest(endpoint="secret.cached", headers=[bearer]),
        api_service_pb2.CallRequest(endpoint="secret.cached", headers=[bearer]),
    ]
    for request in calls:
        reply = await api_stub.Call(request)
        assert reply.status_code in {200, 500}
        assert not leaks(reply.url)
    failing = [
        f"http://user:{PASSWORD}@127.0.0.1:1/?api_key={QUERY_KEY}",  # unreachable
        f"http://user:{PASSWORD}@169.254.169.254/?api_key={QUERY_KEY}",  # refused network
        f"{upstream.url}/slow?s=5&api_key={QUERY_KEY}",  # times out
    ]
    errors: list[str] = []
    for url in failing:
        # aiohttp refuses an Authorization header beside a password in the URL.
        request = api_service_pb2.CallRequest(url=url, headers=[] if "@" in url else [bearer])
        request.timeout.FromMilliseconds(300)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api_stub.Call(request)
        errors.append(
            f"{caught.value.code()} {caught.value.details()} {caught.value.debug_error_string()}"
        )
    stats = await api_stub.GetStats(api_service_pb2.GetStatsRequest())
    await api_app.recorder.flushed()
    rows = await db_stub.Query(
        db_service_pb2.QueryRequest(sql="SELECT * FROM external_api_logs", read_only=True)
    )

    log_lines, span_texts = logged_and_traced(caplog, spans)
    assert len(rows.rows) == len(calls) - 1 + len(failing) - 1  # one cache hit, one refused
    assert any("REDACTED" in text for text in span_texts)
    assert len(span_texts) >= len(calls)
    found = {
        "logs": [line for line in log_lines if leaks(line)],
        "spans": [text for text in span_texts if leaks(text)],
        "records": [str(row) for row in rows.rows if leaks(str(row))],
        "errors": [text for text in errors if leaks(text)],
        "stats": leaks(str(stats)),
    }
    assert found == {"logs": [], "spans": [], "records": [], "errors": [], "stats": []}
