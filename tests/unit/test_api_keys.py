"""Key pools, quotas, placement and pool settings, driven by a fake clock."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import pytest
from paca.api.v1 import api_types_pb2

from api_service.auth.keys import KeyPool, KeyState, NoUsableKey, Strategy, key_label
from api_service.auth.manager import AuthManager
from api_service.auth.placement import place
from api_service.auth.quota import parse_quota
from api_service.auth.settings import AuthSettings, PoolSettings
from api_service.transport import HttpRequest
from paca_runtime.redact import redact_url
from paca_runtime.settings import SettingsError, SettingsSource

pytestmark = pytest.mark.unit

WALL = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(clock: FakeClock, *secrets: str, **kwargs: float) -> KeyPool:
    return KeyPool("gh", secrets, clock=clock, wall_clock=lambda: WALL, **kwargs)  # type: ignore[arg-type]


def test_round_robin_cycles_through_every_key() -> None:
    keys = pool(FakeClock(), "k1", "k2", "k3")
    picked = []
    for _ in range(6):
        key = keys.acquire()
        picked.append(key.secret)
        keys.release(key, 200)
    assert picked == ["k1", "k2", "k3", "k1", "k2", "k3"]


def test_least_used_prefers_the_key_with_fewest_in_flight_then_uses() -> None:
    keys = pool(FakeClock(), "k1", "k2")
    first = keys.acquire(Strategy.LEAST_USED)
    second = keys.acquire(Strategy.LEAST_USED)
    assert {first.secret, second.secret} == {"k1", "k2"}
    keys.release(first, 200)
    # first is free again, second still in flight
    assert keys.acquire(Strategy.LEAST_USED) is first


def test_a_key_refused_with_401_is_quarantined_and_not_used_again() -> None:
    clock = FakeClock()
    keys = pool(clock, "good", "revoked", quarantine_s=300.0)
    first = keys.acquire()
    keys.release(first, 200)
    revoked = keys.acquire()
    assert revoked.secret == "revoked"
    keys.release(revoked, 401)
    for _ in range(5):
        key = keys.acquire()
        assert key.secret == "good"
        keys.release(key, 200)
    clock.now += 301
    assert {keys.acquire().secret, keys.acquire().secret} == {"good", "revoked"}


def test_quarantine_zero_lasts_until_reload() -> None:
    clock = FakeClock()
    keys = pool(clock, "only", quarantine_s=0.0)
    keys.release(keys.acquire(), 403)
    clock.now += 1e6
    with pytest.raises(NoUsableKey) as caught:
        keys.acquire()
    assert caught.value.retry_after_s == math.inf
    assert "1 quarantined" in str(caught.value)
    assert "only" not in str(caught.value)
    keys.reload(["only"])
    assert keys.acquire().secret == "only"


def test_429_cools_the_key_for_its_retry_after() -> None:
    clock = FakeClock()
    keys = pool(clock, "a", "b")
    a = keys.acquire()
    keys.release(a, 429, [("Retry-After", "30")])
    assert [h.state for h in keys.health()] == [KeyState.COOLING, KeyState.ACTIVE]
    for _ in range(3):
        key = keys.acquire()
        assert key.secret == "b"
        keys.release(key, 200)
    clock.now += 30
    assert keys.health()[0].state is KeyState.ACTIVE


def test_no_usable_key_says_when_the_first_key_returns() -> None:
    clock = FakeClock()
    keys = pool(clock, "a")
    keys.release(keys.acquire(), 429, [("Retry-After", "7")])
    clock.now += 2
    with pytest.raises(NoUsableKey) as caught:
        keys.acquire()
    assert caught.value.retry_after_s == pytest.approx(5.0)
    assert caught.value.details()[0].retry_delay.seconds == 5  # type: ignore[attr-defined]


def test_a_nearly_exhausted_key_is_rested_until_its_quota_resets() -> None:
    clock = FakeClock()
    keys = pool(clock, "a", "b", quota_reserve=1)
    a = keys.acquire()
    keys.release(a, 200, [("X-RateLimit-Remaining", "1"), ("X-RateLimit-Reset", "60")])
    b = keys.acquire()
    keys.release(b, 200)
    # a is rested before it fails: every pick is b until a's window resets.
    for _ in range(3):
        key = keys.acquire()
        assert key.secret == "b"
        keys.release(key, 200)
    health = {h.label: h for h in keys.health()}
    assert health[a.label].state is KeyState.RESTED
    assert health[a.label].available_in_s == pytest.approx(60.0)
    clock.now += 60
    assert keys.acquire().secret == "a"


def test_local_countdown_rests_a_key_before_the_provider_says_so() -> None:
    clock = FakeClock()
    keys = pool(clock, "a", quota_reserve=0)
    key = keys.acquire()
    keys.release(key, 200, [("RateLimit-Remaining", "2"), ("RateLimit-Reset", "10")])
    held = [keys.acquire(), keys.acquire()]  # two in flight spend the last two requests
    with pytest.raises(NoUsableKey):
        keys.acquire()
    assert len(held) == 2


def test_labels_are_stable_and_reveal_no_secret() -> None:
    keys = pool(FakeClock(), "s3cr3t-value")
    label = keys.health()[0].label
    assert label == key_label("gh", "s3cr3t-value")
    assert label.startswith("gh#")
    assert len(label) == 11
    assert "s3cr3t" not in repr(keys) + repr(keys.acquire()) + label


@pytest.mark.parametrize(
    ("headers", "limit", "remaining", "reset"),
    [
        ([("RateLimit", '"default";r=5;t=30')], None, 5, 30.0),
        ([("RateLimit", "limit=100, remaining=50, reset=12")], 100, 50, 12.0),
        (
            [("RateLimit-Limit", "10"), ("RateLimit-Remaining", "3"), ("RateLimit-Reset", "4")],
            10,
            3,
            4.0,
        ),
        (
            [("x-ratelimit-remaining", "9"), ("x-ratelimit-reset", str(int(WALL) + 90))],
            None,
            9,
            90.0,
        ),
        ([("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "0")], 60, 0, None),
    ],
)
def test_quota_headers_of_every_family_are_understood(
    headers: list[tuple[str, str]], limit: int | None, remaining: int, reset: float | None
) -> None:
    quota = parse_quota(headers, WALL)
    assert quota is not None
    assert (quota.limit, quota.remaining, quota.reset_s) == (limit, remaining, reset)


def test_no_quota_headers_means_no_quota() -> None:
    assert parse_quota([("Content-Type", "text/plain")], WALL) is None
    assert parse_quota([("X-RateLimit-Remaining", "lots")], WALL) is None


def request(url: str = "http://h/p?q=1") -> HttpRequest:
    return HttpRequest("GET", url, [("Authorization", "Bearer caller"), ("X-Other", "1")], None, 1)


def test_placements_put_the_key_where_the_policy_says() -> None:
    bearer = place(request(), "K", api_types_pb2.KEY_PLACEMENT_UNSPECIFIED, "")
    assert ("Authorization", "Bearer K") in bearer.headers
    assert ("Authorization", "Bearer caller") not in bearer.headers
    header = place(request(), "K", api_types_pb2.KEY_PLACEMENT_HEADER, "X-Api-Key")
    assert ("X-Api-Key", "K") in header.headers
    basic = place(request(), "u:p", api_types_pb2.KEY_PLACEMENT_BASIC, "")
    assert ("Authorization", "Basic " + base64.b64encode(b"u:p").decode()) in basic.headers
    query = place(request(), "K&x", api_types_pb2.KEY_PLACEMENT_QUERY, "appid")
    assert query.url == "http://h/p?q=1&appid=K%26x"


def test_a_query_key_parameter_is_redacted_from_urls() -> None:
    placed = place(request(), "v3ry-secret", api_types_pb2.KEY_PLACEMENT_QUERY, "AppId")
    assert "v3ry-secret" not in redact_url(placed.url)
    assert "q=1" in redact_url(placed.url)


def test_pool_settings_are_read_from_named_sources(tmp_path: Path) -> None:
    secret_file = tmp_path / "keys"
    secret_file.write_text("file-key-1\n\nfile-key-2\n")
    source = SettingsSource(
        {
            "PACA_API_KEY_POOLS": "github, auth.io",
            "PACA_API_KEY_POOL_GITHUB_KEYS": f"env:GH_KEY,file:{secret_file}",
            "PACA_API_KEY_POOL_GITHUB_QUARANTINE_S": "0",
            "PACA_API_KEY_POOL_AUTH_IO_TOKEN_URL": "https://auth.io/token",
            "PACA_API_KEY_POOL_AUTH_IO_CLIENT_ID": "client",
            "PACA_API_KEY_POOL_AUTH_IO_CLIENT_SECRET": "env:AUTH_SECRET",
        }
    )
    settings = AuthSettings.from_source(source)
    assert [p.name for p in settings.pools] == ["github", "auth.io"]
    assert settings.pools[0].quarantine_s == 0.0
    assert settings.pools[1].is_oauth
    manager = AuthManager(settings, environ={"GH_KEY": "env-key", "AUTH_SECRET": "cs"})
    assert manager.pools["github"].secrets == ["env-key", "file-key-1", "file-key-2"]
    assert "auth.io" in manager.clients
    assert manager.scrub("x env-key y cs") == "x REDACTED y REDACTED"


def test_a_secret_pasted_as_a_source_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        PoolSettings("github", key_sources=("ghp_realtoken",))
    assert "PACA_API_KEY_POOL_GITHUB_KEYS" in str(caught.value)
    assert "ghp_realtoken" not in str(caught.value)


def test_a_missing_secret_source_names_the_setting() -> None:
    settings = AuthSettings(pools=(PoolSettings("gh", key_sources=("env:NOPE",)),))
    with pytest.raises(SettingsError, match=r"PACA_API_KEY_POOL_GH_KEYS.*NOPE"):
        AuthManager(settings, environ={})
