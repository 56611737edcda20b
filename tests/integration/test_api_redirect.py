"""Redirect policy (follow, off, same host; per endpoint and per call) and compression."""

from __future__ import annotations

import gzip
import json

import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service.redirects import next_request
from api_service.transport import HttpRequest
from tests.conftest import Upstream, json_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

FOLLOW = api_types_pb2.REDIRECT_MODE_FOLLOW
OFF = api_types_pb2.REDIRECT_MODE_OFF
SAME_HOST = api_types_pb2.REDIRECT_MODE_SAME_HOST


def echoed_headers(body: bytes) -> dict[str, str]:
    """The request headers /echo saw."""
    headers = json_body(body)["headers"]
    assert isinstance(headers, dict)
    return headers


def call(
    url: str, mode: int = 0, max_redirects: int = 0, **fields: object
) -> api_service_pb2.CallRequest:
    request = api_service_pb2.CallRequest(url=url, **fields)  # type: ignore[arg-type]
    if mode or max_redirects:
        request.redirect.mode = mode  # type: ignore[assignment]
        request.redirect.max_redirects = max_redirects
    return request


async def test_redirects_are_followed_by_default_up_to_the_limit(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    followed = await api_stub.Call(call(f"{upstream.url}/hops/3"), timeout=5)
    assert followed.status_code == 200
    assert followed.url == f"{upstream.url}/hops/0"
    assert json_body(followed.body)["path"] == "/hops/0"

    limited = await api_stub.Call(call(f"{upstream.url}/hops/5", FOLLOW, 2), timeout=5)
    assert limited.status_code == 302
    assert ("Location", "/hops/2") in [(h.name, h.value) for h in limited.headers]


async def test_redirects_off_per_call_returns_the_3xx_and_overrides_the_endpoint(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name="hops.off",
        provider="hops",
        base_url=upstream.url,
        path="/hops/{n}",
        redirect=api_types_pb2.RedirectPolicy(mode=OFF),
    )
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
    off = await api_stub.Call(
        api_service_pb2.CallRequest(endpoint="hops.off", path_params={"n": "1"}), timeout=5
    )
    assert off.status_code == 302
    overridden = api_service_pb2.CallRequest(endpoint="hops.off", path_params={"n": "1"})
    overridden.redirect.mode = FOLLOW
    assert (await api_stub.Call(overridden, timeout=5)).status_code == 200
    direct = await api_stub.Call(call(f"{upstream.url}/hops/1", OFF), timeout=5)
    assert direct.status_code == 302


async def test_same_host_stops_at_another_host_and_follow_drops_credentials_there(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    # 127.0.0.1 and localhost are different origins for the same local server.
    elsewhere = upstream.url.replace("127.0.0.1", "localhost") + "/echo"
    url = f"{upstream.url}/hops/1?to={elsewhere}"
    secret = api_types_pb2.Header(name="Authorization", value="Bearer s3cret")
    same_host = await api_stub.Call(call(url, SAME_HOST, headers=[secret]), timeout=5)
    assert same_host.status_code == 302  # /hops/1 → /hops/0 followed, /hops/0 → localhost not
    assert same_host.url.endswith("/hops/0?to=" + elsewhere)
    kept = await api_stub.Call(call(f"{upstream.url}/hops/1", SAME_HOST, headers=[secret]))
    assert echoed_headers(kept.body)["Authorization"] == "Bearer s3cret"  # same origin

    followed = await api_stub.Call(call(url, FOLLOW, headers=[secret]), timeout=5)
    assert followed.status_code == 200
    assert followed.url == elsewhere
    assert "Authorization" not in echoed_headers(followed.body)


def test_303_and_post_on_301_302_become_a_get_without_body_307_308_keep_it() -> None:
    post = HttpRequest(
        "POST", "http://a/x", [("Content-Type", "application/json"), ("X", "1")], b"{}", 1.0
    )
    for status in (301, 302, 303):
        hop = next_request(post, status, "/y")
        assert hop is not None
        assert (hop.method, hop.url, hop.body, hop.headers) == (
            "GET",
            "http://a/y",
            None,
            [("X", "1")],
        )
    for status in (307, 308):
        hop = next_request(post, status, "https://b/z")
        assert hop is not None
        assert (hop.method, hop.body) == ("POST", b"{}")
    assert next_request(post, 304, "/y") is None
    assert next_request(post, 302, None) is None
    assert next_request(post, 302, "javascript:alert(1)") is None


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_compressed_responses_are_decoded(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream, coding: str
) -> None:
    reply = await api_stub.Call(call(f"{upstream.url}/compressed?coding={coding}"), timeout=5)
    assert reply.status_code == 200
    assert json.loads(reply.body) == {"items": ["compressible"] * 2000}


async def test_accept_encoding_offers_gzip_deflate_and_br(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    reply = await api_stub.Call(call(f"{upstream.url}/echo"), timeout=5)
    offered = {c.strip() for c in echoed_headers(reply.body)["Accept-Encoding"].split(",")}
    assert {"gzip", "deflate", "br"} <= offered


async def test_request_bodies_are_gzipped_per_call_or_per_endpoint(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    document = json.dumps({"items": ["compressible"] * 500})
    reply = await api_stub.Call(
        call(
            f"{upstream.url}/echo",
            method=api_types_pb2.HTTP_METHOD_POST,
            json_body=document,
            compress_body=True,
        ),
        timeout=5,
    )
    echoed = json_body(reply.body)
    headers = echoed["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(gzip.compress(document.encode()))
    assert int(headers["Content-Length"]) < len(document) // 10
    assert echoed["body"] == document  # aiohttp's server decodes it: valid gzip of the document

    endpoint = api_types_pb2.Endpoint(
        name="echo.gzip",
        provider="echo",
        base_url=upstream.url,
        path="/echo",
        method=api_types_pb2.HTTP_METHOD_PUT,
        compress_request_body=True,
    )
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))
    reply = await api_stub.Call(
        api_service_pb2.CallRequest(endpoint="echo.gzip", raw_body=b"x" * 1000), timeout=5
    )
    assert echoed_headers(reply.body)["Content-Encoding"] == "gzip"
    assert json_body(reply.body)["body"] == "x" * 1000
