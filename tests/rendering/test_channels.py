"""Render every channel in every locale through render_batch, against a real database."""

from __future__ import annotations

import base64
import hashlib
import json
from email import message_from_bytes, policy

import pytest

from invoice_delivery.rendering import render_batch
from invoice_delivery.rendering.formatting import SUPPORTED_LOCALES
from tests.rendering.conftest import DAYTIME, generate_invoices, messages, plan, set_customer
from tests.rendering.pdf_support import pdf_text

CHANNELS = ("sms", "mailbox", "push", "email", "einvoice", "paper")
CONTENT_TYPES = {
    "mailbox": "application/json",
    "push": "application/json",
    "email": "message/rfc822",
    "einvoice": "application/xml",
    "paper": "application/pdf",
}
PAY_LINK = "https://pay.example.com/i/"


@pytest.fixture
def invoices(conn):
    """Generate invoices whose customers all have an e-mail address and a Peppol id."""
    kinds = generate_invoices(conn, 160)
    conn.execute("UPDATE billing.customer SET peppol_id = '0007:5567890123', email = 'kund@example.com'")
    return kinds


def _render_all(conn, ctx, invoice_ids):
    """Plan every channel in every locale, one invoice each; return the stored messages by (channel, locale)."""
    pairs, cells = [], {}
    ids = iter(invoice_ids)
    for channel in CHANNELS:
        for locale in SUPPORTED_LOCALES:
            invoice_id = next(ids)
            set_customer(conn, invoice_id, locale=locale)
            pairs.append((invoice_id, channel))
            cells[invoice_id] = (channel, locale)
    batch_id = plan(conn, ctx, pairs)
    result = render_batch(conn, ctx, batch_id, now=DAYTIME)
    stored = messages(conn, batch_id)
    return result, {cells[invoice_id]: row for invoice_id, row in stored.items()}


def test_every_channel_and_locale_renders(conn, ctx, invoices):
    result, rendered = _render_all(conn, ctx, invoices["payment"])

    assert result == {"rendered": 30, "failed": 0, "deferred": 0}
    for (channel, locale), row in rendered.items():
        assert row["state"] == "rendered", (channel, locale, row["reason"])
        assert row["content_hash"] == hashlib.sha256(bytes(row["body"])).hexdigest()
        if channel == "sms":
            assert row["content_type"].startswith("text/plain; charset=utf-8; dcs=")
            assert row["segments"] in (1, 2)
        else:
            assert row["content_type"] == CONTENT_TYPES[channel]
            assert row["segments"] is None


def test_payment_demands_carry_payment_data(conn, ctx, invoices):
    _, rendered = _render_all(conn, ctx, invoices["payment"])

    for locale in SUPPORTED_LOCALES:
        sms_text = bytes(rendered["sms", locale]["body"]).decode()
        assert PAY_LINK in sms_text
        mailbox = json.loads(bytes(rendered["mailbox", locale]["body"]))
        assert mailbox["type"] == "invoice"
        assert mailbox["payment_multiple_options"]["method"] == "1"
        assert mailbox["payment_multiple_options"]["options"][0]["type"] == "SE_OCR"
        assert base64.b64decode(mailbox["parts"][0]["data"]).startswith(b"%PDF-")
        email = message_from_bytes(bytes(rendered["email", locale]["body"]), policy=policy.default)
        assert PAY_LINK in email.get_body(("plain",)).get_content()
        assert b"<cac:PaymentMeans>" in bytes(rendered["einvoice", locale]["body"])


@pytest.mark.parametrize("kind", ["credit_note", "zero"])
def test_informational_documents_never_demand_payment(conn, ctx, invoices, kind):
    pool = invoices[kind]
    if not pool:
        pytest.fail(f"the generator made no {kind} invoice; raise the invoice count")
    for index, channel in enumerate(CHANNELS):
        invoice_id = pool[index % len(pool)]
        set_customer(conn, invoice_id, locale="sv")
        batch_id = plan(conn, ctx, [(invoice_id, channel)])

        result = render_batch(conn, ctx, batch_id, now=DAYTIME)

        row = messages(conn, batch_id)[invoice_id]
        body = bytes(row["body"])
        assert result["rendered"] == 1, row["reason"]
        assert PAY_LINK.encode() not in body
        _assert_no_payment_demand(channel, body)


def _assert_no_payment_demand(channel: str, body: bytes) -> None:
    if channel == "sms":
        assert "betala något" in body.decode() or "Inget att betala" in body.decode()
    elif channel == "push":
        assert "betala något" in json.loads(body)["body"]
    elif channel == "mailbox":
        payload = json.loads(body)
        assert payload["type"] == "letter"
        assert "payment_multiple_options" not in payload
        assert "OCR-nummer" not in pdf_text(base64.b64decode(payload["parts"][0]["data"]))
    elif channel == "email":
        email = message_from_bytes(body, policy=policy.default)
        assert "Du behöver inte betala något." in email.get_body(("plain",)).get_content()
        assert "OCR" not in email.get_body(("plain",)).get_content()
    elif channel == "einvoice":
        assert b"PaymentMeans" not in body
        assert b"PaymentID" not in body
    elif channel == "paper":
        text = pdf_text(body)
        assert "Du behöver inte betala något." in text
        assert "OCR-nummer" not in text
        assert "Att betala" not in text
