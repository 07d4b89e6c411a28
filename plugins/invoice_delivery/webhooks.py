"""Sign and verify gateway receipts with the Standard Webhooks scheme.

Every gateway receipt (delivery report, bounce, status change) reaches our receiver as an HTTP
POST with three headers:

- ``webhook-id``: the receipt's unique id. A sender that retries keeps the id.
- ``webhook-timestamp``: Unix time in seconds when the request was signed.
- ``webhook-signature``: one or more space-separated ``v1,<base64 HMAC-SHA256>`` values. The
  HMAC covers ``f"{webhook_id}.{timestamp}."`` followed by the raw request body, keyed with the
  gateway's secret.

A secret that starts with ``whsec_`` carries the key base64-encoded after the prefix, as the
Standard Webhooks libraries expect. Any other secret is used as its UTF-8 bytes.

The simulator signs with :func:`signed_headers`; the receipt receiver checks with :func:`verify`.
Replay detection (a ``webhook-id`` seen before) is the receiver's job, because it needs a
durable store such as a unique key in the database.

Exceptions raised by :func:`verify`::

    WebhookVerificationError
     ├── MissingHeader      a required header is absent or empty
     ├── MalformedHeader    the timestamp is not an integer
     ├── StaleTimestamp     the timestamp is outside the tolerance window
     └── InvalidSignature   no v1 signature in the header matches the body
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(Exception):
    """Base class: the request cannot be trusted as a receipt from the gateway."""


class MissingHeader(WebhookVerificationError):
    """Raised when ``webhook-id``, ``webhook-timestamp`` or ``webhook-signature`` is absent or empty."""


class MalformedHeader(WebhookVerificationError):
    """Raised when ``webhook-timestamp`` is not a whole number of Unix seconds."""


class StaleTimestamp(WebhookVerificationError):
    """Raised when the signing time is further from now than the tolerance, in either direction."""


class InvalidSignature(WebhookVerificationError):
    """Raised when no ``v1`` signature in ``webhook-signature`` matches the id, timestamp and body."""


def signing_key(secret: str) -> bytes:
    """Decode a webhook secret into the HMAC key.

    Raises:
        ValueError: the secret is empty, or has the ``whsec_`` prefix but no valid base64 after it.
    """
    if not secret:
        raise ValueError("webhook secret is empty; configure the gateway's signing secret")
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode("utf-8")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(
            "webhook secret starts with 'whsec_' but the rest is not valid base64; "
            "use 'whsec_' followed by the base64-encoded key, or a secret without the prefix"
        ) from exc
    if not key:
        raise ValueError("webhook secret 'whsec_' has an empty key; append the base64-encoded key")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Compute the ``v1,<base64 HMAC-SHA256>`` signature over ``id.timestamp.body``."""
    signed_content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed_content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def new_webhook_id() -> str:
    """Generate a random receipt id in the ``msg_`` form used by Standard Webhooks senders."""
    return "msg_" + secrets.token_urlsafe(18)


def signed_headers(
    secret: str,
    body: bytes,
    webhook_id: str | None = None,
    now: int | None = None,
) -> dict[str, str]:
    """Build the three Standard Webhooks headers for ``body``.

    ``webhook_id`` defaults to a new random id and ``now`` to the current Unix time in seconds.
    A sender that retries a receipt passes the original ``webhook_id`` again.
    """
    webhook_id = webhook_id or new_webhook_id()
    timestamp = int(time.time()) if now is None else int(now)
    return {
        HEADER_ID: webhook_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret, webhook_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise a :class:`WebhookVerificationError` unless ``body`` is a fresh receipt signed with ``secret``.

    ``headers`` may be any mapping with an ``items()`` method (a dict, ``httpx.Headers``,
    Starlette's ``Headers``, ``http.server``'s message). Header names are matched
    case-insensitively. ``body`` must be the raw request bytes, before any JSON parsing.
    Signatures of versions other than ``v1`` are ignored, and signatures are compared in
    constant time.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = _required_header(lowered, HEADER_ID)
    raw_timestamp = _required_header(lowered, HEADER_TIMESTAMP)
    signature_header = _required_header(lowered, HEADER_SIGNATURE)

    timestamp = _parse_timestamp(raw_timestamp)
    _check_timestamp(timestamp, now, tolerance_s)

    expected = sign(secret, webhook_id, timestamp, body)
    offered = [item for item in signature_header.split(" ") if item.startswith(SIGNATURE_VERSION + ",")]
    if not offered:
        raise InvalidSignature(
            f"{HEADER_SIGNATURE} of receipt {webhook_id!r} has no {SIGNATURE_VERSION} signature; "
            f"expected space-separated '{SIGNATURE_VERSION},<base64>' values"
        )
    matched = False
    for candidate in offered:
        # Compare every candidate so the time taken does not depend on which one matches.
        matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), expected.encode("ascii"))
    if not matched:
        raise InvalidSignature(
            f"no signature of receipt {webhook_id!r} matches its body; check that the receiver uses "
            "the gateway's current secret and verifies the raw body bytes"
        )


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = (headers.get(name) or "").strip()
    if not value:
        raise MissingHeader(f"header {name!r} is missing or empty; the gateway must send it with every receipt")
    return value


def _parse_timestamp(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise MalformedHeader(f"{HEADER_TIMESTAMP} {raw!r} is not an integer; expected Unix time in seconds") from None


def _check_timestamp(timestamp: int, now: int | None, tolerance_s: int) -> None:
    current = int(time.time()) if now is None else int(now)
    if timestamp < current - tolerance_s:
        raise StaleTimestamp(
            f"{HEADER_TIMESTAMP} {timestamp} is {current - timestamp} s old, more than the "
            f"{tolerance_s} s tolerance; the receipt is too old or the clocks differ"
        )
    if timestamp > current + tolerance_s:
        raise StaleTimestamp(
            f"{HEADER_TIMESTAMP} {timestamp} is {timestamp - current} s in the future, more than the "
            f"{tolerance_s} s tolerance; check the sender's and the receiver's clocks"
        )
