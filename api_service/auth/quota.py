"""Quotas a provider announces in its response headers, so a key is rested before it fails.

Understood, newest first when several are present:

- ``RateLimit: "default";r=50;t=30`` (draft-ietf-httpapi-ratelimit-headers-07 and later) and the
  older combined ``RateLimit: limit=100, remaining=50, reset=30``;
- ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` (drafts 00-06; reset is
  delta seconds);
- ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (GitHub, Twitter and
  many more; reset is epoch seconds at GitHub, delta seconds elsewhere: a value above
  ``EPOCH_THRESHOLD`` is read as a time).

Hand-written: the parsing is a few lines per header family, and the Python packages that parse
these headers belong to server-side limiters (``limits``, ``slowapi``) that only emit them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# A reset larger than this (2001-09-09) is an epoch time, not a number of seconds.
EPOCH_THRESHOLD = 1_000_000_000
_PARAM = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*=\s*\"?([0-9.]+)\"?")


@dataclass(frozen=True, slots=True)
class Quota:
    """What the provider said about the key's window: any field may be unknown (None)."""

    limit: int | None
    remaining: int | None
    reset_s: float | None


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers if k.lower() == lowered), None)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        # "100, 100;w=60" (draft-01 quota policies): the first item is the figure.
        return max(0, int(float(value.split(",")[0].split(";")[0].strip())))
    except ValueError:
        return None


def _reset(value: str | None, wall_now: float) -> float | None:
    number = _int(value)
    if number is None:
        return None
    if number > EPOCH_THRESHOLD:
        return max(0.0, number - wall_now)
    return float(number)


def _combined(value: str) -> Quota | None:
    params = {k.lower(): v for k, v in _PARAM.findall(value)}
    remaining = params.get("r", params.get("remaining"))
    if remaining is None:
        return None
    reset = params.get("t", params.get("reset"))
    limit = params.get("limit")
    return Quota(
        limit=_int(limit),
        remaining=_int(remaining),
        reset_s=float(reset) if reset is not None else None,
    )


def parse_quota(headers: Sequence[tuple[str, str]], wall_now: float) -> Quota | None:
    """The quota in ``headers``, or None when they announce none.

    Args:
        headers: Response headers, in any case.
        wall_now: Epoch seconds, to turn an epoch reset into a delay.
    """
    combined = _header(headers, "ratelimit")
    if combined is not None and (quota := _combined(combined)) is not None:
        return quota
    for prefix in ("ratelimit-", "x-ratelimit-"):
        remaining = _int(_header(headers, prefix + "remaining"))
        if remaining is not None:
            return Quota(
                limit=_int(_header(headers, prefix + "limit")),
                remaining=remaining,
                reset_s=_reset(_header(headers, prefix + "reset"), wall_now),
            )
    return None
