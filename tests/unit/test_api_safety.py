"""The outbound network policy on addresses, without sockets."""

from __future__ import annotations

import pytest

from api_service import ApiSettings
from api_service.errors import ForbiddenTarget
from api_service.safety import NetworkPolicy, parse_networks
from paca_runtime.settings import SettingsError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
    ],
)
def test_only_public_addresses_pass_an_empty_allow_list(address: str, allowed: bool) -> None:
    assert NetworkPolicy().permits(address) is allowed


def test_allowed_networks_let_their_addresses_through_and_nothing_else() -> None:
    policy = NetworkPolicy(parse_networks("127.0.0.0/8, ::1"))
    assert policy.permits("127.0.0.2")
    assert policy.permits("::1")
    assert policy.permits("::ffff:127.0.0.1")
    assert not policy.permits("169.254.169.254")
    assert not policy.permits("10.0.0.1")


def test_check_url_refuses_literal_ips_and_leaves_names_to_the_resolver() -> None:
    policy = NetworkPolicy()
    with pytest.raises(ForbiddenTarget) as caught:
        policy.check_url("http://user:pw@169.254.169.254/x?key=1")
    assert "pw" not in str(caught.value)
    policy.check_url("http://metadata.example/")


def test_bad_network_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        parse_networks("127.0.0.0/8,nope")


def test_bad_allowed_networks_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="PACA_API_ALLOWED_NETWORKS"):
        ApiSettings(allowed_networks="10.0.0.0/8,nope")
    with pytest.raises(SettingsError, match="PACA_API_MAX_RESPONSE_BYTES"):
        ApiSettings(max_response_bytes=0)
