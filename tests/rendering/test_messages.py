"""Check the shape of each channel's message: mailbox request, push notification, e-mail, paper."""

from __future__ import annotations

import base64
import json
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime

import pytest

from invoice_delivery.rendering import Renderer, RenderError
from tests.rendering.conftest import DAYTIME, make_row
from tests.rendering.pdf_support import pdf_text


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_mailbox_request_for_payment_demand(renderer):
    message = renderer.mailbox(make_row("mailbox"))
    payload = json.loads(message.body)

    assert message.content_type == "application/json"
    assert payload["ssn"] == "198001011234"
    assert payload["type"] == "invoice"
    assert payload["generated_at"] == "2026-03-01T00:00:00+00:00"
    assert payload["subject"] == message.subject == "Faktura 10000042 från Nordlys Energi AB"
    assert payload["payment_multiple_options"] == {
        "payable": True, "currency": "SEK", "method": "1", "account": "5381-0420",
        "options": [{"due_date": "2026-03-31", "amount": "1234.50", "type": "SE_OCR", "reference": "100000424"}],
    }  # fmt: skip
    part = payload["parts"][0]
    assert part["content_type"] == "application/pdf"
    assert part["name"] == "10000042.pdf"
    assert "100000424" in pdf_text(base64.b64decode(part["data"]))


@pytest.mark.parametrize("locale", ["sv", "en", "nb", "da", "fi"])
def test_mailbox_subject_has_no_personal_data(renderer, locale):
    subject = renderer.mailbox(make_row("mailbox", locale)).subject

    assert "Anna" not in subject
    assert "198001011234" not in subject
    assert "10000042" in subject


def test_mailbox_business_recipient_by_vat_number(renderer):
    row = make_row("mailbox", kind="business", personal_number=None, customer_vat_number="SE556789012301")

    payload = json.loads(renderer.mailbox(row).body)

    assert payload["vat_number"] == "SE556789012301"
    assert "ssn" not in payload


def test_mailbox_payment_needs_ocr(renderer):
    with pytest.raises(RenderError, match="need a bankgiro and an OCR reference"):
        renderer.mailbox(make_row("mailbox", ocr_reference=None))


def test_push_notification_shape(renderer):
    message = renderer.push(make_row("push"))
    payload = json.loads(message.body)

    assert set(payload) == {"title", "body", "data"}
    assert payload["title"] == message.subject == "Ny faktura från Nordlys Energi AB"
    assert payload["body"].startswith("Hej Anna! 1\u00a0234,50\u00a0kr att betala senast 31 mars 2026.")
    assert payload["data"] == {"deep_link": "https://app.example.com/invoices/42", "invoice_id": "42"}
    assert "198001011234" not in message.body.decode()
    assert "987,60" not in payload["body"]  # the net amount: only the total is shown


def test_push_title_over_limit_fails(renderer):
    seller_name = "Nordlys Energi och Värme i Norra och Södra Norrland AB"

    with pytest.raises(RenderError, match="push title is 70 characters and the limit is 65"):
        renderer.push(make_row("push", seller_name=seller_name))


def test_email_message_structure(renderer):
    message = renderer.email(make_row("email"), now=DAYTIME)
    parsed = message_from_bytes(message.body, policy=policy.default)

    assert message.content_type == "message/rfc822"
    assert b"\r\n" in message.body
    assert b"\n" not in message.body.replace(b"\r\n", b"")  # every line ends in CRLF
    assert parsed["From"] == "Nordlys Energi AB <no-reply@example.com>"
    assert parsed["To"] == "Anna Andersson <anna@example.com>"
    assert parsed["Subject"] == message.subject == "Faktura 10000042 från Nordlys Energi AB"
    assert parsed["Message-ID"] == "<key-42@invoice-delivery>"
    assert parsedate_to_datetime(parsed["Date"]) == DAYTIME
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = parsed.iter_parts()
    assert [part.get_content_type() for part in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "10000042.pdf"
    assert attachment.get_content().startswith(b"%PDF-")


def test_email_sender_configurable(monkeypatch):
    monkeypatch.setenv("INVOICE_DELIVERY_EMAIL_FROM", "faktura@nordlys.example.com")

    from_env = message_from_bytes(Renderer().email(make_row("email"), now=DAYTIME).body, policy=policy.default)
    from_argument = Renderer(email_sender="noreply@example.com").email(make_row("email"), now=DAYTIME)

    assert from_env["From"].addresses[0].addr_spec == "faktura@nordlys.example.com"
    sender = message_from_bytes(from_argument.body, policy=policy.default)["From"].addresses[0]
    assert sender.addr_spec == "noreply@example.com"


def test_email_without_address_fails(renderer):
    with pytest.raises(RenderError, match="no e-mail address"):
        renderer.email(make_row("email", email=None), now=DAYTIME)


def test_paper_needs_postal_address(renderer):
    with pytest.raises(RenderError, match="no complete postal address"):
        renderer.paper(make_row("paper", street=None))


def test_unknown_channel_fails(renderer):
    with pytest.raises(RenderError, match="no renderer for channel 'fax'"):
        renderer.render(make_row("fax"))
