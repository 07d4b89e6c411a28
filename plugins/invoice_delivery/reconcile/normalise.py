"""Turn each gateway's receipt payload into one shape: message id, reference, normalised status.

Normalised statuses: ``delivered``, ``failed``, ``expired`` (final), ``pending`` (no change),
``opened`` (the customer opened it: informational, it also proves delivery).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SMS_DELIVERED = {1001}
SMS_EXPIRED = {1002}
SMS_FAILED = {1003, 1004, 1006, 2104, 2105, 2}
SMS_PENDING = {1005, 1012, 1, 3}


class ReceiptFormatError(ValueError):
    """Raised when a receipt body lacks the fields its channel's contract requires."""


@dataclass(frozen=True)
class NormalisedReceipt:
    gateway_message_id: str | None
    reference: str | None
    status: str
    gateway_status: str | None
    detail: str | None = None


def _sms(payload: dict[str, Any]) -> NormalisedReceipt:
    try:
        code = int(payload["resultCode"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReceiptFormatError("SMS delivery report needs an integer resultCode") from exc
    if code in SMS_DELIVERED:
        status = "delivered"
    elif code in SMS_EXPIRED:
        status = "expired"
    elif code in SMS_FAILED:
        status = "failed"
    else:
        status = "pending"
    return NormalisedReceipt(str(payload.get("id") or "") or None, payload.get("refId"), status, str(code),
                             f"SMS result {code}")


def _email(payload: dict[str, Any]) -> NormalisedReceipt:
    event = payload.get("event")
    if event == "delivered":
        status = "delivered"
    elif event == "bounce":
        status = "failed" if payload.get("bounce_type") == "hard" else "pending"
    else:
        status = "pending"
    return NormalisedReceipt(payload.get("message_id"), payload.get("reference") or payload.get("message_id"),
                             status, f"{event}:{payload.get('bounce_type') or ''}".rstrip(":"), payload.get("reason"))


def _push(payload: dict[str, Any]) -> NormalisedReceipt:
    status = "opened" if payload.get("event") == "opened" else "pending"
    return NormalisedReceipt(payload.get("message_id") or payload.get("name"), payload.get("reference"), status,
                             payload.get("event"))


def _einvoice(payload: dict[str, Any]) -> NormalisedReceipt:
    code = payload.get("status")
    status = {"AP": "delivered", "RE": "failed"}.get(code, "pending")
    reasons = payload.get("reasons") or []
    return NormalisedReceipt(payload.get("transmission_id"), payload.get("reference"), status, code,
                             "; ".join(map(str, reasons)) or None)


def _polled(payload: dict[str, Any]) -> NormalisedReceipt:
    """Read a receipt the reconciliation wrote itself from a status poll."""
    return NormalisedReceipt(payload["message_id"], payload.get("reference"), payload["status"],
                             payload.get("gateway_status"), payload.get("detail"))


NORMALISERS = {"sms": _sms, "email": _email, "push": _push, "einvoice": _einvoice}


def normalise(channel: str, payload: dict[str, Any]) -> NormalisedReceipt:
    """Normalise ``payload`` from ``channel``; raise ReceiptFormatError for an unknown channel or shape."""
    if payload.get("source") == "poll":
        return _polled(payload)
    try:
        normaliser = NORMALISERS[channel]
    except KeyError:
        raise ReceiptFormatError(
            f"no receipt contract for channel {channel!r}; expected one of {sorted(NORMALISERS)}") from None
    return normaliser(payload)
