"""OAuth2 client credentials against a real token endpoint: caching, refresh, single flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from paca.api.v1 import api_types_pb2

from api_service.auth.manager import AuthManager
from api_service.auth.settings import AuthSettings, PoolSettings
from api_service.errors import UpstreamUnavailable
from api_service.transport import HttpRequest, HttpTransport
from tests.conftest import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    made = HttpTransport()
    await made.open()
    try:
        yield made
    finally:
        await made.aclose()


def manager(
    upstream: Upstream, transport: HttpTransport, clock: FakeClock, secret: str, query: str = ""
) -> AuthManager:
    pool = PoolSettings(
        "idp",
        token_url=f"{upstream.url}/oauth/token{query}",
        client_id=OAUTH_CLIENT_ID,
        client_secret_source="env:IDP_SECRET",
        scope="read write",
    )
    return AuthManager(
        AuthSettings(pools=(pool,), refresh_margin_s=60.0),
        send=transport.send,
        environ={"IDP_SECRET": secret},
        clock=clock,
    )


ENDPOINT = api_types_pb2.Endpoint(
    name="idp.protected", provider="idp", auth=api_types_pb2.AuthPolicy()
)


def protected(upstream: Upstream) -> HttpRequest:
    return HttpRequest("GET", f"{upstream.url}/oauth/protected", [], None, 5.0)


async def test_a_token_is_fetched_once_and_reused(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager(upstream, transport, FakeClock(), OAUTH_CLIENT_SECRET)
    for _ in range(3):
        response = await auth.send(ENDPOINT, protected(upstream), transport.send)
        assert response.status == 200
    assert upstream.tokens_issued == ["tok-1-read write"]


async def test_concurrent_calls_share_one_token_request(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager(upstream, transport, FakeClock(), OAUTH_CLIENT_SECRET, "?delay=0.2")
    replies = await asyncio.gather(
        *(auth.send(ENDPOINT, protected(upstream), transport.send) for _ in range(20))
    )
    assert {r.status for r in replies} == {200}
    assert len(upstream.tokens_issued) == 1


async def test_the_token_is_refreshed_before_it_expires(
    upstream: Upstream, transport: HttpTransport
) -> None:
    clock = FakeClock()
    upstream.token_lifetime_s = 300
    auth = manager(upstream, transport, clock, OAUTH_CLIENT_SECRET)
    await auth.send(ENDPOINT, protected(upstream), transport.send)
    clock.now += 250  # inside the 60 s margin: the old token still serves, a new one is fetched
    response = await auth.send(ENDPOINT, protected(upstream), transport.send)
    assert response.status == 200
    assert upstream.keys_seen[-1] == "tok-1-read write"
    await auth.clients["idp"].settled()
    assert upstream.tokens_issued == ["tok-1-read write", "tok-2-read write"]
    await auth.send(ENDPOINT, protected(upstream), transport.send)
    assert upstream.keys_seen[-1] == "tok-2-read write"


async def test_a_revoked_token_is_replaced_and_the_call_retried_once(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager(upstream, transport, FakeClock(), OAUTH_CLIENT_SECRET)
    await auth.send(ENDPOINT, protected(upstream), transport.send)
    upstream.tokens_revoked.add("tok-1-read write")
    response = await auth.send(ENDPOINT, protected(upstream), transport.send)
    assert response.status == 200
    assert upstream.keys_seen[-2:] == ["tok-1-read write", "tok-2-read write"]
    assert auth.retried == 1


async def test_a_refused_client_fails_without_revealing_its_secret(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager(upstream, transport, FakeClock(), "wr0ng-s3cret")
    with pytest.raises(UpstreamUnavailable) as caught:
        await auth.send(ENDPOINT, protected(upstream), transport.send)
    assert "401" in str(caught.value)
    assert "wr0ng-s3cret" not in str(caught.value) + repr(auth) + repr(auth.clients["idp"])
    assert [h.state.value for h in auth.health()] == ["cooling"]
