"""Signature schemes of webhook senders: Standard Webhooks, GitHub, and a generic body HMAC.

Hand-written rather than the ``standardwebhooks`` package: each scheme is a few lines of
:mod:`hmac`, the package brings an HTTP client and generated API code we do not use, and we need
a distinct reason per failure (stale timestamp vs bad signature) and several keys per source for
rotation. The Standard Webhooks part is checked against the specification's published test
vector. Every comparison is constant-time (:func:`hmac.compare_digest`) and all keys are tried,
so timing does not tell which key or which signature came close.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from api_service.webhooks.settings import WebhookSource

MAX_ID_CHARS = 255


class Rejected(Exception):
    """The request is refused with ``status``; ``reason`` is the counted label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    event_id: str
    event_type: str


def sign_standard(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature (``v1,<base64>``), as a sender computes it."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()


def _any_match(expected: list[bytes], offered: list[bytes]) -> bool:
    matched = False
    for want in expected:
        for got in offered:
            # No early exit: every pair is compared.
            matched |= hmac.compare_digest(want, got)
    return matched


def _json_type(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    kind = document.get("type", "") if isinstance(document, dict) else ""
    return kind if isinstance(kind, str) else ""


def _id(value: str, header: str) -> str:
    if not value:
        raise Rejected(400, "missing_header", f"{header} header is required")
    if len(value) > MAX_ID_CHARS:
        raise Rejected(400, "malformed", f"{header} is longer than {MAX_ID_CHARS} characters")
    return value


def verify(
    source: WebhookSource,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: float,
    tolerance_s: float,
    hmac_header: str,
) -> Verified:
    """Check a request's signature by its source's scheme; raises :class:`Rejected`.

    Args:
        headers: Case-insensitive request headers.
        now_s: Current wall-clock time (Unix seconds) for the timestamp tolerance.
    """
    if source.scheme == "standard":
        return _standard(source, headers, body, now_s, tolerance_s)
    if source.scheme == "github":
        return _github(source, headers, body)
    return _generic(source, headers, body, hmac_header)


def _standard(
    source: WebhookSource, headers: Mapping[str, str], body: bytes, now_s: float, tolerance_s: float
) -> Verified:
    msg_id = _id(headers.get("webhook-id", ""), "webhook-id")
    raw_ts = headers.get("webhook-timestamp", "")
    if not raw_ts:
        raise Rejected(400, "missing_header", "webhook-timestamp header is required")
    if not raw_ts.isdigit():
        raise Rejected(400, "malformed", "webhook-timestamp must be Unix seconds")
    timestamp = int(raw_ts)
    if timestamp < now_s - tolerance_s:
        raise Rejected(400, "stale_timestamp", "webhook-timestamp is too old")
    if timestamp > now_s + tolerance_s:
        raise Rejected(400, "future_timestamp", "webhook-timestamp is in the future")
    offered = []
    for part in headers.get("webhook-signature", "").split():
        version, _, signature = part.partition(",")
        if version == "v1":
            offered.append(signature.encode())
    if not offered:
        raise Rejected(401, "bad_signature", "webhook-signature has no v1 signature")
    expected = [sign_standard(key, msg_id, timestamp, body)[3:].encode() for key in source.keys]
    if not _any_match(expected, offered):
        raise Rejected(401, "bad_signature", "no webhook-signature matches")
    return Verified(msg_id, _json_type(body))


def _hex_hmac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode()


def _github(source: WebhookSource, headers: Mapping[str, str], body: bytes) -> Verified:
    delivery = _id(headers.get("X-GitHub-Delivery", ""), "X-GitHub-Delivery")
    signature = headers.get("X-Hub-Signature-256", "")
    if not signature.startswith("sha256="):
        raise Rejected(401, "bad_signature", "X-Hub-Signature-256 must be sha256=<hex>")
    offered = [signature.removeprefix("sha256=").lower().encode()]
    if not _any_match([_hex_hmac(key, body) for key in source.keys], offered):
        raise Rejected(401, "bad_signature", "X-Hub-Signature-256 does not match")
    return Verified(delivery, headers.get("X-GitHub-Event", ""))


def _generic(
    source: WebhookSource, headers: Mapping[str, str], body: bytes, hmac_header: str
) -> Verified:
    signature = headers.get(hmac_header, "")
    if not signature:
        raise Rejected(401, "bad_signature", f"{hmac_header} header is required")
    offered = [signature.removeprefix("sha256=").lower().encode()]
    if not _any_match([_hex_hmac(key, body) for key in source.keys], offered):
        raise Rejected(401, "bad_signature", f"{hmac_header} does not match")
    event_id = headers.get("X-Webhook-Id", "")
    # Without an id the body's digest is the id: a re-sent identical body is stored once.
    if not event_id:
        event_id = "sha256:" + hashlib.sha256(body).hexdigest()
    return Verified(
        _id(event_id, "X-Webhook-Id"), headers.get("X-Event-Type", "") or _json_type(body)
    )
