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


# Further parameter names (lower case) this process uses for credentials, e.g. the query
# parameter an endpoint's API key is placed in; see add_secret_params.
_PROCESS_PARAMS: set[str] = set()


def add_secret_params(*names: str) -> None:
    """Hide the values of query parameters ``names`` in every later ``redact_url`` call."""
    _PROCESS_PARAMS.update(name.lower() for name in names)


def redact_url(url: str, extra_params: frozenset[str] = frozenset()) -> str:
    """The URL with its password and secret query parameter values replaced by REDACTED.

    A URL with nothing to hide comes back unchanged, byte for byte (``sqlite:////abs/path``
    would lose a slash in a split-and-join round trip).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc, query = parts.netloc, parts.query
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hostport}"
    secret = SECRET_PARAMS | _PROCESS_PARAMS | {p.lower() for p in extra_params}
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in secret for k, _ in pairs):
        query = urlencode(
            [(k, REDACTED if k.lower() in secret else v) for k, v in pairs], safe=REDACTED
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
