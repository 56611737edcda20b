"""Credentials of outbound calls: key pools (env or secret files) and OAuth2 client credentials.

The facade is :class:`AuthManager`; :class:`KeyPool` is one provider's keys and their health,
:class:`ClientCredentials` one OAuth2 client's cached token.
"""

from api_service.auth.keys import (
    KeyHealth,
    KeyPool,
    KeyState,
    NoUsableKey,
    PooledKey,
    Strategy,
    UnknownKeyPool,
    key_label,
)
from api_service.auth.manager import AuthManager
from api_service.auth.oauth import ClientCredentials
from api_service.auth.placement import place
from api_service.auth.quota import Quota, parse_quota
from api_service.auth.settings import AuthSettings, PoolSettings

__all__ = [
    "AuthManager",
    "AuthSettings",
    "ClientCredentials",
    "KeyHealth",
    "KeyPool",
    "KeyState",
    "NoUsableKey",
    "PoolSettings",
    "PooledKey",
    "Quota",
    "Strategy",
    "UnknownKeyPool",
    "key_label",
    "parse_quota",
    "place",
]
