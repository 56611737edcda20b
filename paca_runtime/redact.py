"""Removing secrets from URLs before they reach logs, traces or the call record."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED: Final = "REDACTED"

# Query parameter names (lower case) that carry credentials in common APIs.
SECRET_PARAMS: Final = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "api-key",
        "auth",
        "client_secret",
        "code",
        "key",
        "password",
        "secret",
        "sig",
        "signature",
        "token",
        "x-api-key",
    }
)


def redact_url(url: str, extra_params: frozenset[str] = frozenset()) -> str:
    """The URL with its password and secret query parameter values replaced by REDACTED."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    changed = False
    if "@" in netloc:
        changed = True
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = parts.query
    if query:
        secret = SECRET_PARAMS | {p.lower() for p in extra_params}
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(k.lower() in secret for k, _ in pairs):
            return (
                url
                if not changed
                else urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
            )
        query = urlencode(
            [(k, REDACTED if k.lower() in secret else v) for k, v in pairs], safe=REDACTED
        )
    elif not changed:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
