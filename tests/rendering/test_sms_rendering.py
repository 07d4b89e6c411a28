"""Render SMS texts: encoding, exact part counts, the short variant and the part budget."""

from __future__ import annotations

import pytest

from invoice_delivery.rendering import Renderer, RenderError, render_batch
from invoice_delivery.rendering import sms as sms_encoding
from tests.rendering.conftest import DAYTIME, generate_invoices, make_row, messages, plan, set_customer

SWEDISH_DEMAND = (
    "Hej Anna! Din faktura 10000042 från Nordlys Energi AB på 1 234,50 kr förfaller 31 mars 2026. "
    "OCR: 100000424. Betala här: https://pay.example.com/i/42"
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_swedish_letters_stay_gsm7(renderer):
    message = renderer.sms(make_row())

    assert message.body.decode() == SWEDISH_DEMAND
    assert message.content_type == "text/plain; charset=utf-8; dcs=GSM"
    assert message.segments == 1


def test_babel_spaces_become_plain_spaces(renderer):
    text = renderer.sms(make_row()).body.decode()

    assert "1 234,50 kr" in text
    assert "\u00a0" not in text


def test_euro_sign_takes_two_positions(renderer):
    text = renderer.sms(make_row(locale="fi", currency="EUR")).body.decode()
    encoded = sms_encoding.encode(text)

    assert "1 234,50 €" in text
    assert encoded.dcs == "GSM"
    assert encoded.units == len(text) + 1
    assert encoded.segments == 2


def test_emoji_switches_to_ucs2(renderer):
    message = renderer.sms(make_row(seller_name="Nordlys Energi AB 🌞"))
    encoded = sms_encoding.encode(message.body.decode())

    assert message.content_type.endswith("dcs=UCS2")
    assert encoded.units == len(message.body.decode()) + 1  # the emoji is two UTF-16 code units
    # The full text would need 3 parts of 67 units, so the short variant went out in 2.
    assert message.body.decode().startswith("Faktura från Nordlys Energi AB 🌞:")
    assert message.segments == 2


def test_curly_apostrophe_replaced(renderer):
    message = renderer.sms(make_row(seller_name="Kraft’n Energi AB"))

    assert "Kraft'n Energi AB" in message.body.decode()
    assert message.content_type.endswith("dcs=GSM")


@pytest.mark.parametrize(
    ("seller_name", "units", "segments"),
    [
        ("Nordlys Energi AB", 149, 1),
        ("Nordlys Energi och Värme i Norra Norrland AB", 176, 2),
    ],
)
def test_exact_part_counts(renderer, seller_name, units, segments):
    message = renderer.sms(make_row(seller_name=seller_name))

    assert sms_encoding.encode(message.body.decode()).units == units
    assert message.segments == segments


def test_over_budget_uses_short_variant():
    renderer = Renderer(sms_segment_budgets={"invoice": 1, "invoice_short": 1})

    message = renderer.sms(make_row(seller_name="Nordlys Energi och Värme i Norra Norrland AB"))

    assert message.body.decode() == (
        "Faktura från Nordlys Energi och Värme i Norra Norrland AB: 1 234,50 kr, förfaller 31 mars 2026. "
        "OCR 100000424. https://pay.example.com/i/42"
    )
    assert message.segments == 1


def test_short_variant_over_budget_fails(renderer):
    with pytest.raises(RenderError, match=r"needs 4 parts \(GSM, 469 units\) even in its short form"):
        renderer.sms(make_row(seller_name="Nordlys Energi " * 25))


def test_over_budget_fails_delivery_with_reason(conn, ctx):
    kinds = generate_invoices(conn, 20)
    too_long, fine = kinds["payment"][:2]
    for invoice_id in (too_long, fine):
        set_customer(conn, invoice_id, locale="sv")
    conn.execute("UPDATE billing.invoice SET ocr_reference = %s WHERE invoice_id = %s", ("1" * 400, too_long))
    batch_id = plan(conn, ctx, [(too_long, "sms"), (fine, "sms")])

    result = render_batch(conn, ctx, batch_id, now=DAYTIME)

    stored = messages(conn, batch_id)
    assert result == {"rendered": 1, "failed": 1, "deferred": 0}
    assert stored[too_long]["state"] == "failed"
    assert "SMS text needs 4 parts" in stored[too_long]["reason"]
    assert "the budget is 2" in stored[too_long]["reason"]
    assert stored[too_long]["body"] is None
    assert stored[fine]["state"] == "rendered"
    assert stored[fine]["segments"] == 1
