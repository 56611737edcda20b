"""Webhook signature schemes: the Standard Webhooks test vector, tampering, rotation, time."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from multidict import CIMultiDict

from api_service.webhooks import Rejected, WebhookSource, sign_standard, verify

pytestmark = [pytest.mark.unit]

# The Standard Webhooks specification's published vector (also in its reference libraries).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD_KEY = base64.b64decode(SPEC_SECRET.removeprefix("whsec_"))
NEW_KEY = b"a newer key of the same sender!!"


def standard(*keys: bytes) -> WebhookSource:
    return WebhookSource("acme", "standard", keys)


def headers(msg_id: str, timestamp: int, signature: str) -> CIMultiDict[str]:
    return CIMultiDict(
        {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
    )


def check(source: WebhookSource, hdrs: CIMultiDict[str], body: bytes, now_s: float) -> str:
    return verify(source, hdrs, body, now_s=now_s, tolerance_s=300, hmac_header="X-Sig").event_id


def test_signing_reproduces_the_specification_test_vector() -> None:
    assert sign_standard(OLD_KEY, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_specification_test_vector_verifies() -> None:
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    assert check(standard(OLD_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID


def test_tampered_body_is_refused_as_bad_signature() -> None:
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    with pytest.raises(Rejected) as caught:
        check(standard(OLD_KEY), hdrs, b'{"test": 2432232315}', SPEC_TIMESTAMP)
    assert (caught.value.status, caught.value.reason) == (401, "bad_signature")


def test_signature_by_a_wrong_secret_is_refused() -> None:
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    with pytest.raises(Rejected, match="no webhook-signature matches"):
        check(standard(NEW_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP)


@pytest.mark.parametrize("signing_key", [OLD_KEY, NEW_KEY])
def test_during_rotation_old_and_new_secret_are_both_accepted(signing_key: bytes) -> None:
    signature = sign_standard(signing_key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, signature)
    assert check(standard(OLD_KEY, NEW_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID


def test_any_of_several_space_separated_signatures_may_match() -> None:
    both = "v1,bm9wZQ== " + SPEC_SIGNATURE
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, both)
    assert check(standard(OLD_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID


@pytest.mark.parametrize(
    ("offset_s", "reason"), [(-301, "stale_timestamp"), (301, "future_timestamp")]
)
def test_timestamp_outside_tolerance_is_refused(offset_s: int, reason: str) -> None:
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    with pytest.raises(Rejected) as caught:
        check(standard(OLD_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP - offset_s)
    assert (caught.value.status, caught.value.reason) == (400, reason)


def test_timestamp_at_the_tolerance_edge_is_accepted() -> None:
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    assert check(standard(OLD_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP + 300) == SPEC_ID


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp"])
def test_missing_standard_header_is_refused(missing: str) -> None:
    hdrs = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    del hdrs[missing]
    with pytest.raises(Rejected) as caught:
        check(standard(OLD_KEY), hdrs, SPEC_BODY, SPEC_TIMESTAMP)
    assert caught.value.reason == "missing_header"


def test_event_type_comes_from_the_json_body() -> None:
    body = b'{"type": "invoice.paid", "data": {}}'
    hdrs = headers("m1", 100, sign_standard(OLD_KEY, "m1", 100, body))
    verified = verify(standard(OLD_KEY), hdrs, body, now_s=100, tolerance_s=300, hmac_header="X")
    assert verified.event_type == "invoice.paid"


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_github_signature_verifies_and_gives_delivery_id_and_event() -> None:
    source = WebhookSource("gh", "github", (b"It's a Secret to Everybody",))
    body = b"Hello, World!"
    # GitHub's documented example signature for this secret and payload.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature(source.keys[0], body) == expected
    hdrs = CIMultiDict(
        {"X-Hub-Signature-256": expected, "X-GitHub-Delivery": "d-1", "X-GitHub-Event": "push"}
    )
    verified = verify(source, hdrs, body, now_s=0, tolerance_s=300, hmac_header="X")
    assert (verified.event_id, verified.event_type) == ("d-1", "push")
    hdrs["X-Hub-Signature-256"] = github_signature(b"wrong", body)
    with pytest.raises(Rejected, match="does not match"):
        verify(source, hdrs, body, now_s=0, tolerance_s=300, hmac_header="X")


def test_generic_hmac_without_id_uses_the_body_digest_as_id() -> None:
    source = WebhookSource("plain", "hmac", (b"k",))
    body = b'{"type": "ping"}'
    hdrs = CIMultiDict({"X-Sig": hmac.new(b"k", body, hashlib.sha256).hexdigest()})
    verified = verify(source, hdrs, body, now_s=0, tolerance_s=300, hmac_header="X-Sig")
    assert verified.event_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert verified.event_type == "ping"
    with pytest.raises(Rejected):
        verify(source, hdrs, body + b" ", now_s=0, tolerance_s=300, hmac_header="X-Sig")
