"""HTTP client and RPC spans of real calls follow the OpenTelemetry semantic conventions.

api_service and db_service run in this process on real sockets; the upstream is a real aiohttp
server. Spans are read from an in-memory exporter on the process's tracer provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from aiohttp import web
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc

from api_service import ApiApp
from db_service import DbApp
from paca_runtime import semconv
from paca_runtime.telemetry import grpc_client_interceptors, grpc_server_interceptors
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SECRET = "s3cr3t"


def everything_recorded(spans: Sequence[ReadableSpan]) -> str:
    """Names, attribute values and events of ``spans`` as one text to search."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
        parts.append(span.status.description or "")
        for event in span.events:
            parts.append(event.name)
            parts += [f"{k}={v!r}" for k, v in (event.attributes or {}).items()]
    return "\n".join(parts)


def http_spans(exporter: InMemorySpanExporter, path: str) -> list[ReadableSpan]:
    found = [
        s
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.CLIENT and path in str((s.attributes or {}).get(semconv.URL_FULL, ""))
    ]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_each_attempt_is_an_http_client_span_with_the_stable_attributes_and_no_secret(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    upstream: Upstream,
    spans: InMemorySpanExporter,
) -> None:
    url = f"{upstream.url}/flaky/semconv?fail=2&api_key={SECRET}&q=1"
    reply = await api_stub.Call(api_service_pb2.CallRequest(url=url))
    assert reply.status_code == 200
    assert reply.attempts == 3
    await api_app.recorder.flushed()

    attempts = http_spans(spans, "/flaky/semconv")
    assert len(attempts) == 3
    port = int(upstream.url.rpartition(":")[2])
    for number, span in enumerate(attempts):
        attributes = span.attributes or {}
        assert span.name == "GET"
        assert attributes[semconv.HTTP_REQUEST_METHOD] == "GET"
        assert attributes[semconv.URL_FULL] == (
            f"{upstream.url}/flaky/semconv?fail=2&api_key=REDACTED&q=1"
        )
        assert attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
        assert attributes[semconv.SERVER_PORT] == port
        assert attributes.get(semconv.HTTP_REQUEST_RESEND_COUNT) == (number or None)
        # All attempts are children of the one api.call span.
        assert span.parent is not None
        assert span.parent.span_id == attempts[0].parent.span_id  # type: ignore[union-attr]
    first, second, last = attempts
    for failed in (first, second):
        assert (failed.attributes or {})[semconv.HTTP_RESPONSE_STATUS_CODE] == 503
        assert (failed.attributes or {})[semconv.ERROR_TYPE] == "503"
        assert failed.status.status_code == StatusCode.ERROR
    assert (last.attributes or {})[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert semconv.ERROR_TYPE not in (last.attributes or {})
    assert last.status.status_code == StatusCode.UNSET

    # Not in the HTTP spans, nor in api.call, the server spans, the call-log flush or the DB.
    assert SECRET not in everything_recorded(spans.get_finished_spans())


@pytest.fixture
async def redirector(upstream: Upstream) -> AsyncIterator[str]:
    """A server whose /hop answers 302 to the upstream's /flaky/hop?fail=1."""

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{upstream.url}/flaky/hop?fail=1")

    app = web.Application()
    app.router.add_get("/hop", hop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hop"
    finally:
        await runner.cleanup()


async def test_redirect_hops_and_retries_all_count_as_resends(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    redirector: str,
    spans: InMemorySpanExporter,
) -> None:
    reply = await api_stub.Call(api_service_pb2.CallRequest(url=redirector))
    assert reply.status_code == 200
    assert reply.attempts == 2
    sent = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT and s.name == "GET"]
    sent.sort(key=lambda s: s.start_time or 0)
    # hop -> 503, then the retry: hop -> 200; four requests, one call.
    assert [str((s.attributes or {})[semconv.URL_FULL]).split("/")[-1] for s in sent] == [
        "hop",
        "hop?fail=1",
        "hop",
        "hop?fail=1",
    ]
    assert [(s.attributes or {}).get(semconv.HTTP_REQUEST_RESEND_COUNT) for s in sent] == [
        None,
        1,
        2,
        3,
    ]
    assert [(s.attributes or {})[semconv.HTTP_RESPONSE_STATUS_CODE] for s in sent] == [
        302,
        503,
        302,
        200,
    ]


async def test_credentials_in_the_url_and_a_failed_connection_show_as_the_conventions_say(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    upstream: Upstream,
    spans: InMemorySpanExporter,
) -> None:
    host = upstream.url.removeprefix("http://")
    await api_stub.Call(api_service_pb2.CallRequest(url=f"http://user:{SECRET}@{host}/echo/who"))
    (span,) = http_spans(spans, "/echo/who")
    assert (span.attributes or {})[semconv.URL_FULL] == f"http://REDACTED:REDACTED@{host}/echo/who"

    request = api_service_pb2.CallRequest(url=f"http://127.0.0.1:1/closed?token={SECRET}")
    request.timeout.FromSeconds(2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(request)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    failed = http_spans(spans, "/closed")
    assert failed, "no HTTP span for the refused connection"
    for span in failed:
        attributes = span.attributes or {}
        assert span.status.status_code == StatusCode.ERROR
        assert attributes[semconv.ERROR_TYPE] == "ClientConnectorError"
        assert semconv.HTTP_RESPONSE_STATUS_CODE not in attributes
        assert attributes[semconv.URL_FULL] == "http://127.0.0.1:1/closed?token=REDACTED"
    assert SECRET not in everything_recorded(spans.get_finished_spans())


def rpc_span(
    exporter: InMemorySpanExporter, kind: SpanKind, full_method: str
) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == kind and s.name == full_method]


async def test_rpc_client_and_server_spans_carry_rpc_attributes_server_address_and_status(
    api_app: ApiApp, db_app: DbApp, upstream: Upstream, spans: InMemorySpanExporter
) -> None:
    address = api_app.server.bound_address
    host, _, port = address.rpartition(":")
    async with grpc.aio.insecure_channel(
        address, interceptors=grpc_client_interceptors(address)
    ) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        await api.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/echo"))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await api.Call(api_service_pb2.CallRequest(url="ftp://example.com/"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        failing = api_service_pb2.CallRequest(url="http://127.0.0.1:1/")
        failing.timeout.FromSeconds(2)
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await api.Call(failing)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    await api_app.recorder.flushed()

    method = "/paca.api.v1.ApiService/Call"
    clients = rpc_span(spans, SpanKind.CLIENT, method)
    servers = rpc_span(spans, SpanKind.SERVER, method)
    assert len(clients) == len(servers) == 3
    for span in (*clients, *servers):
        attributes = span.attributes or {}
        assert attributes[semconv.RPC_SYSTEM] == "grpc"
        assert attributes[semconv.RPC_SERVICE] == "paca.api.v1.ApiService"
        assert attributes[semconv.RPC_METHOD] == "Call"
    for span in clients:
        assert (span.attributes or {})[semconv.SERVER_ADDRESS] == host
        assert (span.attributes or {})[semconv.SERVER_PORT] == int(port)
    codes = [
        [(s.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] for s in group]
        for group in (clients, servers)
    ]
    ok, invalid, unavailable = 0, 3, 14
    assert codes == [[ok, invalid, unavailable]] * 2
    # A client span is an error on any status but OK; a server span only when the fault is the
    # server's (UNAVAILABLE), not the caller's (INVALID_ARGUMENT).
    assert [s.status.status_code for s in clients] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.ERROR,
    ]
    assert [s.status.status_code for s in servers] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]

    # api_service's own channel to db_service: the call log's RecordApiCalls.
    db_method = "/paca.db.v1.DbService/RecordApiCalls"
    record_clients = rpc_span(spans, SpanKind.CLIENT, db_method)
    assert record_clients
    db_host, _, db_port = db_app.server.bound_address.rpartition(":")
    for span in record_clients:
        attributes = span.attributes or {}
        assert attributes[semconv.RPC_SERVICE] == "paca.db.v1.DbService"
        assert attributes[semconv.RPC_METHOD] == "RecordApiCalls"
        assert attributes[semconv.SERVER_ADDRESS] == db_host
        assert attributes[semconv.SERVER_PORT] == int(db_port)
        assert attributes[semconv.RPC_GRPC_STATUS_CODE] == ok
    record_servers = rpc_span(spans, SpanKind.SERVER, db_method)
    assert {s.parent.span_id for s in record_servers if s.parent} <= {
        s.context.span_id for s in record_clients
    }


async def test_server_span_status_of_abort_with_status_and_of_an_unhandled_error(
    spans: InMemorySpanExporter,
) -> None:
    async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise ValueError("not a status error")

    async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="no such thing")
        await context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("unreachable")

    handlers = {
        "Boom": grpc.unary_unary_rpc_method_handler(boom),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
    }
    server = grpc.aio.server(
        interceptors=grpc_server_interceptors(), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Svc", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method, code in (
                ("Boom", grpc.StatusCode.UNKNOWN),
                ("Missing", grpc.StatusCode.NOT_FOUND),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(f"/t.Svc/{method}")(b"", timeout=5)
                assert caught.value.code() == code
    finally:
        await server.stop(0)
    by_method = {
        (s.attributes or {}).get(semconv.RPC_METHOD): s
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name.startswith("/t.Svc/")
    }
    boom_span, missing_span = by_method["Boom"], by_method["Missing"]
    assert (boom_span.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] == 2
    assert boom_span.status.status_code == StatusCode.ERROR
    assert (missing_span.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] == 5
    assert missing_span.status.status_code == StatusCode.UNSET  # the caller's fault
