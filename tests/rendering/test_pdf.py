"""Render invoice PDFs and read back their text, images and structure."""

from __future__ import annotations

from decimal import Decimal

import pytest

from invoice_delivery.rendering import Renderer
from invoice_delivery.rendering.formatting import SUPPORTED_LOCALES
from invoice_delivery.rendering.pdf_writer import win_ansi
from tests.rendering.conftest import make_row
from tests.rendering.pdf_support import image_count, pdf_text, xref_offsets_valid


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_pdf_has_ocr_reference_and_qr(renderer, locale):
    pdf = renderer.pdf(make_row("paper", locale))

    assert pdf.startswith(b"%PDF-")
    assert "100000424" in pdf_text(pdf)
    assert image_count(pdf) == 1
    assert xref_offsets_valid(pdf)


def test_pdf_holds_invoice_facts(renderer):
    text = pdf_text(renderer.pdf(make_row("mailbox")))

    for fact in ("Nordlys Energi AB", "Anna Andersson", "Storgatan 1", "111 22 Stockholm", "Faktura",
                 "10000042", "31 mars 2026", "OCR-nummer", "100000424", "bankgiro 5381-0420",
                 "Elhandel, rörligt pris", "800 kWh", "1,2345", "987,60 kr", "Moms 25 % på 987,60 kr",
                 "246,90 kr", "1 234,50 kr", "Momsreg.nr SE559183740501"):
        assert fact in text, fact


def test_credit_note_pdf_has_no_payment_demand(renderer):
    row = make_row("paper", document_type="credit_note", purpose="informational", due_date=None)

    pdf = renderer.pdf(row)
    text = pdf_text(pdf)

    assert image_count(pdf) == 0
    assert "Kreditfaktura" in text
    assert "Du behöver inte betala något." in text
    assert "OCR-nummer" not in text
    assert "Att betala" not in text


def test_zero_amount_pdf_has_no_payment_demand(renderer):
    pdf = renderer.pdf(make_row("paper", payable=Decimal("0.00"), purpose="informational"))

    assert image_count(pdf) == 0
    assert "Du behöver inte betala något." in pdf_text(pdf)


def test_foreign_payment_demand_has_no_swedish_qr(renderer):
    row = make_row("paper", "en", currency="EUR", bankgiro=None, iban="SE4550000000058398257466",
                   payment_account="SE4550000000058398257466")

    pdf = renderer.pdf(row)

    assert image_count(pdf) == 0
    assert "account SE4550000000058398257466" in pdf_text(pdf)
    assert "€1,234.50" in pdf_text(pdf)


def test_paper_copy_adds_return_address(renderer):
    digital = pdf_text(renderer.pdf(make_row("mailbox")))
    paper = pdf_text(renderer.paper(make_row("paper")).body)

    return_address = "Nordlys Energi AB, Kraftverksvägen 7, 903 27 Umeå"
    assert return_address in paper
    assert return_address not in digital


def test_many_lines_continue_on_next_page(renderer):
    lines = [{"line_no": n, "line_id": str(n), "description": f"Timpris, uppdrag {n}", "quantity": Decimal(1),
              "unit_code": "HUR", "unit_price": Decimal("10.00"), "net_amount": Decimal("10.00"),
              "vat_category": "S", "vat_rate": Decimal("25.00")} for n in range(1, 81)]

    pdf = renderer.pdf(make_row("paper", lines=lines))

    assert pdf.count(b"/Type /Page ") >= 2
    assert "Timpris, uppdrag 80" in pdf_text(pdf)
    assert xref_offsets_valid(pdf)


def test_characters_outside_windows_1252_mapped():
    assert win_ansi("Łódź − 5 €") == "Lódz - 5 €".encode("cp1252")
    assert win_ansi("Ærø 😀") == "Ærø ?".encode("cp1252")


def test_same_invoice_renders_same_bytes(renderer):
    assert renderer.pdf(make_row("paper")) == renderer.pdf(make_row("paper"))
