"""ApiService.Call against a local upstream, with the call log written through db_service."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from api_service import ApiApp
from tests.conftest import Upstream, json_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    return fields


async def count_logs(db: db_service_pb2_grpc.DbServiceStub, where: str = "1=1") -> int:
    reply = await db.Query(
        db_service_pb2.QueryRequest(
            sql=f"SELECT count(*) FROM external_api_logs WHERE {where}", read_only=True
        )
    )
    return int(reply.rows[0].values[0].int64_value)


async def test_call_returns_status_headers_and_body_bytes_intact(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    reply = await api_stub.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/binary"))
    assert reply.status_code == 200
    assert reply.body == bytes(range(256)) * 64
    cookies = [h.value for h in reply.headers if h.name.lower() == "set-cookie"]
    assert cookies == ["a=1", "b=2"]
    assert reply.attempts == 1
    assert reply.latency.ToTimedelta().total_seconds() > 0


async def test_cookies_an_upstream_sets_are_never_sent_on_later_calls(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    # One engine serves many callers: a cookie set on one caller's call must not ride along
    # on another's (the caller sees Set-Cookie and may send Cookie itself). By name: a cookie
    # jar keeps no cookies of a bare IP address.
    named = upstream.url.replace("127.0.0.1", "localhost")
    first = await api_stub.Call(api_service_pb2.CallRequest(url=f"{named}/binary"))
    assert [h.value for h in first.headers if h.name.lower() == "set-cookie"] == ["a=1", "b=2"]
    later = await api_stub.Call(api_service_pb2.CallRequest(url=f"{named}/echo/later"))
    sent = json_body(later.body)["headers"]
    assert isinstance(sent, dict)
    assert "Cookie" not in sent
    own = await api_stub.Call(
        api_service_pb2.CallRequest(
            url=f"{named}/echo/own",
            headers=[api_types_pb2.Header(name="Cookie", value="mine=1")],
        )
    )
    sent = json_body(own.body)["headers"]
    assert isinstance(sent, dict)
    assert sent["Cookie"] == "mine=1"


async def test_call_to_registered_endpoint_fills_path_query_headers_and_json_body(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name="echo.item",
        provider="echo",
        base_url=upstream.url,
        path="/echo/items/{item_id}",
        method=api_types_pb2.HTTP_METHOD_POST,
        default_headers=[api_types_pb2.Header(name="X-Default", value="d")],
    )
    registered = await api_stub.RegisterEndpoint(
        api_service_pb2.RegisterEndpointRequest(endpoint=endpoint)
    )
    assert registered.created
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(
            endpoint="echo.item",
            path_params={"item_id": "a b/c"},
            query=[
                api_types_pb2.QueryParam(name="tag", value="x"),
                api_types_pb2.QueryParam(name="tag", value="y"),
            ],
            headers=[api_types_pb2.Header(name="X-Call", value="c")],
            json_body='{"n": 1}',
        )
    )
    echoed = json_body(reply.body)
    assert reply.status_code == 200
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/items/a b/c"
    assert echoed["query"] == [["tag", "x"], ["tag", "y"]]
    headers = echoed["headers"]
    assert isinstance(headers, dict)
    assert headers["X-Default"] == "d"
    assert headers["X-Call"] == "c"
    assert headers["Content-Type"] == "application/json"
    assert echoed["body"] == '{"n": 1}'


async def test_upstream_error_status_is_returned_and_recorded_as_failure(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(url=f"{upstream.url}/status/503", provider="flaky")
    )
    assert reply.status_code == 503
    await api_app.recorder.flushed()
    assert await count_logs(db_stub, "provider = 'flaky' AND success = 0") == 1
    assert await count_logs(db_stub, "provider = 'flaky' AND error_message = 'HTTP 503'") == 1


async def test_successful_call_is_recorded_with_json_data_and_secrets_redacted(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    await api_stub.Call(
        api_service_pb2.CallRequest(
            url=f"{upstream.url}/echo?api_key=s3cr3t&q=1",
            provider="echo",
            headers=[api_types_pb2.Header(name="Authorization", value="Bearer s3cr3t")],
        )
    )
    await api_app.recorder.flushed()
    reply = await db_stub.Query(
        db_service_pb2.QueryRequest(
            sql="SELECT success, url, data, response_time_ms FROM external_api_logs",
            read_only=True,
        )
    )
    assert len(reply.rows) == 1
    success, url, data, elapsed = reply.rows[0].values
    # A BOOLEAN column may come back typed as bool or, from SQLite, as the integer 1.
    assert success.bool_value or success.int64_value == 1
    assert "s3cr3t" not in url.string_value
    assert url.string_value.endswith("/echo?api_key=REDACTED&q=1")
    assert '"method": "GET"' in (data.string_value or data.json_value)
    assert elapsed.double_value > 0


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (api_service_pb2.CallRequest(), grpc.StatusCode.INVALID_ARGUMENT, "target"),
        (
            api_service_pb2.CallRequest(url="ftp://example.com/x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "url",
        ),
        (
            api_service_pb2.CallRequest(url="http://[::1/broken"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "url",
        ),
        (api_service_pb2.CallRequest(url="/relative"), grpc.StatusCode.INVALID_ARGUMENT, "url"),
        (
            api_service_pb2.CallRequest(url="http://127.0.0.1:1/x", json_body="{nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "json_body",
        ),
        (
            api_service_pb2.CallRequest(
                url="http://127.0.0.1:1/x",
                headers=[api_types_pb2.Header(name="X-Bad", value="a\r\nInjected: 1")],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "headers[0].value",
        ),
        (
            api_service_pb2.CallRequest(
                url="http://user:pw@127.0.0.1:1/x",
                headers=[api_types_pb2.Header(name="Authorization", value="Bearer t")],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "headers",
        ),
    ],
)
async def test_bad_call_input_is_invalid_argument_naming_the_field_and_not_recorded(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    request_: api_service_pb2.CallRequest,
    code: grpc.StatusCode,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(request_)
    assert caught.value.code() == code
    assert field_violations(caught.value) == [field]
    await api_app.recorder.flushed()
    assert api_app.recorder.recorded == 0
    assert await count_logs(db_stub) == 0


async def test_unknown_endpoint_is_not_found(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(api_service_pb2.CallRequest(endpoint="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (caught.value.details() or "")


async def test_unreachable_upstream_is_unavailable_and_recorded_as_failure(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(api_service_pb2.CallRequest(url="http://127.0.0.1:1/", provider="gone"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await api_app.recorder.flushed()
    assert await count_logs(db_stub, "provider = 'gone' AND success = 0") == 1


async def test_slow_upstream_hits_the_call_timeout_as_deadline_exceeded(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    request = api_service_pb2.CallRequest(url=f"{upstream.url}/slow?s=5")
    request.timeout.FromMilliseconds(200)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.Call(request)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_registry_round_trip_and_bad_endpoint_names_the_field(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
) -> None:
    good = api_types_pb2.Endpoint(name="a.b", provider="p", base_url="https://api.example.com")
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=good))
    listed = await api_stub.ListEndpoints(api_service_pb2.ListEndpointsRequest())
    assert [e.name for e in listed.endpoints] == ["a.b"]
    bad = api_types_pb2.Endpoint(name="c", provider="p", base_url="file:///etc/passwd")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=bad))
    assert field_violations(caught.value) == ["endpoint.base_url"]
    listed = await api_stub.ListEndpoints(api_service_pb2.ListEndpointsRequest())
    assert [e.name for e in listed.endpoints] == ["a.b"]
    await api_stub.RemoveEndpoint(api_service_pb2.RemoveEndpointRequest(name="a.b"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.GetEndpoint(api_service_pb2.GetEndpointRequest(name="a.b"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
