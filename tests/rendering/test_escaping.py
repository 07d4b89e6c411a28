"""Escape by template kind: HTML is escaped, SMS, push and plain text keep the characters."""

from __future__ import annotations

import json
from email import message_from_bytes, policy

import pytest

from invoice_delivery.rendering import Renderer, render_batch
from tests.rendering.conftest import DAYTIME, generate_invoices, make_row, messages, plan, set_customer

NAME = "Öberg & Söner <AB>"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def business_row(channel: str, locale: str = "sv") -> dict:
    return make_row(channel, locale, kind="business", customer_name=NAME, personal_number=None)


@pytest.mark.parametrize("locale", ["sv", "en", "nb", "da", "fi"])
def test_sms_keeps_name_literally(renderer, locale):
    text = renderer.sms(business_row("sms", locale)).body.decode()

    assert NAME in text
    assert "&amp;" not in text


@pytest.mark.parametrize("locale", ["sv", "en", "nb", "da", "fi"])
def test_push_keeps_name_literally(renderer, locale):
    payload = json.loads(renderer.push(business_row("push", locale)).body)

    assert NAME in payload["body"]
    assert "&lt;" not in payload["body"]


@pytest.mark.parametrize("locale", ["sv", "en", "nb", "da", "fi"])
def test_email_escapes_html_part_only(renderer, locale):
    message = message_from_bytes(renderer.email(business_row("email", locale), now=DAYTIME).body, policy=policy.default)
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()

    assert NAME in plain
    assert "Öberg &amp; Söner &lt;AB&gt;" in html
    assert "<AB>" not in html


def test_recipient_header_quotes_name(renderer):
    message = message_from_bytes(renderer.email(business_row("email"), now=DAYTIME).body, policy=policy.default)

    assert message["To"].addresses[0].display_name == NAME
    assert message["To"].addresses[0].addr_spec == "anna@example.com"


def test_name_from_database_escaped_in_html(conn, ctx):
    invoice_id = generate_invoices(conn, 5)["payment"][0]
    set_customer(conn, invoice_id, kind="business", name=NAME, locale="sv", email="kund@example.com")
    batch_id = plan(conn, ctx, [(invoice_id, "email")])

    render_batch(conn, ctx, batch_id, now=DAYTIME)

    body = bytes(messages(conn, batch_id)[invoice_id]["body"])
    message = message_from_bytes(body, policy=policy.default)
    assert "Hej Öberg & Söner <AB>!" in message.get_body(("plain",)).get_content()
    assert "Hej Öberg &amp; Söner &lt;AB&gt;!" in message.get_body(("html",)).get_content()
