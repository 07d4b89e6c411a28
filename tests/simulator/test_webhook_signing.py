"""Unit tests of Standard Webhooks signing and verification."""

from __future__ import annotations

import base64

import pytest

from invoice_delivery import webhooks

SECRET = "whsec_" + base64.b64encode(b"a signing key of the gateway").decode()
BODY = b'{"refId":"inv-1-sms-1","resultCode":1001}'
NOW = 1_700_000_000


def test_sign_matches_standard_webhooks_example() -> None:
    # Test vector found in many Standard Webhooks implementations' test suites (Java, Rust, .NET, TypeScript).
    signature = webhooks.sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signed_headers_verify() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, webhook_id="msg_1", now=NOW)

    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(NOW)
    assert headers["webhook-signature"].startswith("v1,")
    webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_signed_headers_default_id_and_time() -> None:
    headers = webhooks.signed_headers(SECRET, BODY)

    assert headers["webhook-id"].startswith("msg_")
    webhooks.verify(SECRET, headers, BODY)


def test_verify_matches_header_names_case_insensitively() -> None:
    headers = {name.upper(): value for name, value in webhooks.signed_headers(SECRET, BODY, now=NOW).items()}

    webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_verify_accepts_any_of_several_signatures() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, webhook_id="msg_1", now=NOW)
    old_secret_signature = webhooks.sign("whsec_" + base64.b64encode(b"old key").decode(), "msg_1", NOW, BODY)
    headers["webhook-signature"] = f"v2,ignored {old_secret_signature} {headers['webhook-signature']}"

    webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_tampered_body() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)

    with pytest.raises(webhooks.InvalidSignature, match="matches its body"):
        webhooks.verify(SECRET, headers, BODY.replace(b"1001", b"1006"), now=NOW)


def test_verify_rejects_wrong_secret() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)

    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify("whsec_" + base64.b64encode(b"another key").decode(), headers, BODY, now=NOW)


def test_verify_rejects_changed_webhook_id() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, webhook_id="msg_1", now=NOW)
    headers["webhook-id"] = "msg_2"

    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_header_without_v1_signature() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")

    with pytest.raises(webhooks.InvalidSignature, match="no v1 signature"):
        webhooks.verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("offset_s", [301, -301, 86_400])
def test_verify_rejects_timestamp_outside_tolerance(offset_s: int) -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)

    with pytest.raises(webhooks.StaleTimestamp, match="300 s tolerance"):
        webhooks.verify(SECRET, headers, BODY, now=NOW + offset_s)


@pytest.mark.parametrize("offset_s", [300, -300, 0])
def test_verify_accepts_timestamp_at_tolerance_edge(offset_s: int) -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)

    webhooks.verify(SECRET, headers, BODY, now=NOW + offset_s)


def test_verify_custom_tolerance() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)

    with pytest.raises(webhooks.StaleTimestamp):
        webhooks.verify(SECRET, headers, BODY, now=NOW + 11, tolerance_s=10)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_missing_header(missing: str) -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)
    del headers[missing]

    with pytest.raises(webhooks.MissingHeader, match=missing):
        webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_empty_header() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)
    headers["webhook-signature"] = "  "

    with pytest.raises(webhooks.MissingHeader):
        webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_malformed_timestamp() -> None:
    headers = webhooks.signed_headers(SECRET, BODY, now=NOW)
    headers["webhook-timestamp"] = "2025-01-31T10:00:00Z"

    with pytest.raises(webhooks.MalformedHeader, match="Unix time"):
        webhooks.verify(SECRET, headers, BODY, now=NOW)


def test_errors_share_base_class() -> None:
    for error in (
        webhooks.MissingHeader,
        webhooks.MalformedHeader,
        webhooks.StaleTimestamp,
        webhooks.InvalidSignature,
    ):
        assert issubclass(error, webhooks.WebhookVerificationError)


def test_secret_without_prefix_is_utf8_key() -> None:
    raw_key = "plain-secret"
    headers = webhooks.signed_headers(raw_key, BODY, now=NOW)
    prefixed = "whsec_" + base64.b64encode(raw_key.encode()).decode()

    webhooks.verify(prefixed, headers, BODY, now=NOW)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not*base64"])
def test_unusable_secret_raises_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        webhooks.sign(secret, "msg_1", NOW, BODY)
