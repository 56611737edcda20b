"""Key pools against a real provider stand-in: quarantine, cool-down, quota rest, placements."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from paca.api.v1 import api_types_pb2

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.auth.keys import KeyState, NoUsableKey
from api_service.auth.manager import AuthManager
from api_service.auth.settings import AuthSettings, PoolSettings
from api_service.transport import HttpRequest, HttpTransport
from paca_runtime import RuntimeSettings
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    made = HttpTransport()
    await made.open()
    try:
        yield made
    finally:
        await made.aclose()


def manager(*keys: str) -> AuthManager:
    environ = {f"KEY_{i}": key for i, key in enumerate(keys)}
    pool = PoolSettings("prov", key_sources=tuple(f"env:{name}" for name in environ))
    return AuthManager(AuthSettings(pools=(pool,)), environ=environ)


def endpoint(
    placement: api_types_pb2.KeyPlacement.ValueType = api_types_pb2.KEY_PLACEMENT_BEARER,
    parameter: str = "",
) -> api_types_pb2.Endpoint:
    return api_types_pb2.Endpoint(
        name="prov.keyed",
        provider="prov",
        auth=api_types_pb2.AuthPolicy(placement=placement, parameter_name=parameter),
    )


def keyed(upstream: Upstream, query: str = "") -> HttpRequest:
    return HttpRequest("GET", f"{upstream.url}/keyed{query}", [], None, 5.0)


async def test_a_revoked_key_is_quarantined_and_never_used_again(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager("key-revoked-1", "key-good-2")
    for _ in range(6):
        response = await auth.send(endpoint(), keyed(upstream), transport.send)
        assert response.status == 200  # the refused first try was retried with the other key
    assert upstream.keys_seen.count("key-revoked-1") == 1
    states = {h.label: h.state for h in auth.health()}
    assert sorted(s.value for s in states.values()) == ["active", "quarantined"]


async def test_every_placement_reaches_the_provider(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager("k-place")
    placements = [
        endpoint(api_types_pb2.KEY_PLACEMENT_BEARER),
        endpoint(api_types_pb2.KEY_PLACEMENT_HEADER, "X-Api-Key"),
        endpoint(api_types_pb2.KEY_PLACEMENT_QUERY, "appid"),
        endpoint(api_types_pb2.KEY_PLACEMENT_BASIC),
    ]
    for spec in placements:
        response = await auth.send(spec, keyed(upstream), transport.send)
        assert response.status == 200
    assert upstream.keys_seen == ["k-place"] * 4


async def test_a_throttled_key_cools_down_for_its_retry_after(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager("key-throttled")
    response = await auth.send(endpoint(), keyed(upstream, "?retry_after=120"), transport.send)
    assert response.status == 429
    with pytest.raises(NoUsableKey) as caught:
        await auth.send(endpoint(), keyed(upstream), transport.send)
    assert 119 <= caught.value.retry_after_s <= 120
    assert "key-throttled" not in str(caught.value)
    assert upstream.keys_seen == ["key-throttled"]
    (health,) = auth.health()
    assert health.state is KeyState.COOLING


async def test_a_key_whose_quota_is_nearly_spent_rests_before_it_fails(
    upstream: Upstream, transport: HttpTransport
) -> None:
    auth = manager("key-a", "key-b")
    await auth.send(endpoint(), keyed(upstream, "?remaining=1&reset=600"), transport.send)
    for _ in range(4):
        await auth.send(endpoint(), keyed(upstream), transport.send)
    assert upstream.keys_seen == ["key-a"] + ["key-b"] * 4
    (message,) = [m for m in auth.messages() if m.state == api_types_pb2.KEY_STATE_RESTED]
    assert message.quota_remaining == 1
    assert 590 <= message.available_in.seconds <= 600


async def test_sighup_rereads_a_rotated_key_file_and_lifts_quarantine(
    upstream: Upstream, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("key-revoked-a\n")
    pool = PoolSettings("prov", key_sources=(f"file:{keys}",), quarantine_s=0)
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address="",
        calllog=CallLogSettings(spool_dir=tmp_path / "spool"),
        auth=AuthSettings(pools=(pool,)),
    )
    app = ApiApp(settings, RuntimeSettings(monitor_address="", state_dir=tmp_path))
    await app.start()
    try:
        auth = app.caller.auth
        assert (await auth.send(endpoint(), keyed(upstream), app.transport.send)).status == 401
        with pytest.raises(NoUsableKey):  # quarantined until the keys are reloaded
            await auth.send(endpoint(), keyed(upstream), app.transport.send)
        keys.write_text("key-fresh-b\n")
        reloaded = asyncio.Event()
        app.caller.auth.reload = _then_set(app.caller.auth.reload, reloaded)  # type: ignore[method-assign]
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(reloaded.wait(), 5)
        assert (await auth.send(endpoint(), keyed(upstream), app.transport.send)).status == 200
        assert upstream.keys_seen == ["key-revoked-a", "key-fresh-b"]
        keys.unlink()
        app.reload_keys()  # a failing source changes nothing
        assert [h.state for h in auth.health()] == [KeyState.ACTIVE]
    finally:
        await app.stop()


def _then_set(reload: Callable[[], None], done: asyncio.Event) -> Callable[[], None]:
    def wrapped() -> None:
        reload()
        done.set()

    return wrapped
