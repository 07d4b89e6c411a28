"""Generate Peppol BIS Billing 3.0 UBL and read it back with the project's own UBL parser."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from lxml import etree

from invoice_delivery.ingest.ubl import NAMESPACES, ingest_files, parse_document
from invoice_delivery.rendering import Renderer, RenderError
from invoice_delivery.rendering.einvoice import CUSTOMIZATION_ID, PROFILE_ID
from tests.rendering.conftest import delivery_rows, generate_invoices, make_row, plan


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _round_trip(renderer, row, tmp_path):
    """Render the row as UBL, write it to a file and parse it back."""
    path = tmp_path / f"{row['invoice_id']}.xml"
    path.write_bytes(renderer.einvoice(row).body)
    return path, parse_document(path)


def _assert_totals_equal(row, document):
    assert document.totals.tax_exclusive == row["net_total"]
    assert document.totals.tax_inclusive == row["gross_total"]
    assert document.totals.payable == row["payable"]
    assert document.totals.prepaid == row["prepaid"]
    assert document.totals.rounding == row["rounding"]
    assert document.totals.line_extension == sum(line["net_amount"] for line in row["lines"])
    assert document.vat_total == row["vat_total"]
    assert {(v.category, v.rate, v.taxable_amount, v.tax_amount) for v in document.vat_breakdown} == {
        (v["vat_category"], v["vat_rate"], v["taxable_amount"], v["tax_amount"]) for v in row["vat_breakdown"]
    }
    assert len(document.lines) == len(row["lines"])


@pytest.fixture
def generated_rows(conn, ctx):
    """Return renderer rows for a payment demand, a multi-rate invoice, a credit note and a zero amount."""
    kinds = generate_invoices(conn, 400, seed=5)
    conn.execute("UPDATE billing.customer SET peppol_id = '0007:5567890123'")
    multi_rate = conn.execute(
        "SELECT invoice_id FROM billing.invoice_vat GROUP BY invoice_id HAVING count(*) > 1 ORDER BY 1 LIMIT 1"
    ).fetchone()["invoice_id"]
    chosen = {"payment": kinds["payment"][0], "multi_rate": multi_rate,
              "credit_note": kinds["credit_note"][0], "zero": kinds["zero"][0]}
    rows = delivery_rows(conn, plan(conn, ctx, [(invoice_id, "einvoice") for invoice_id in chosen.values()]))
    by_id = {row["invoice_id"]: row for row in rows}
    return {name: by_id[invoice_id] for name, invoice_id in chosen.items()}


@pytest.mark.parametrize("name", ["payment", "multi_rate", "credit_note", "zero"])
def test_round_trip_keeps_totals(renderer, generated_rows, tmp_path, name):
    row = generated_rows[name]

    _, document = _round_trip(renderer, row, tmp_path)

    _assert_totals_equal(row, document)
    assert document.invoice_number == row["invoice_number"]
    assert document.currency == row["currency"]
    assert document.seller.endpoint_id == row["seller_peppol_id"]
    assert document.buyer.endpoint_id == "0007:5567890123"


def test_xml_is_well_formed_bis3(renderer, generated_rows, tmp_path):
    path, document = _round_trip(renderer, generated_rows["payment"], tmp_path)

    root = etree.parse(str(path)).getroot()
    assert root.findtext("cbc:CustomizationID", namespaces=NAMESPACES) == CUSTOMIZATION_ID
    assert root.findtext("cbc:ProfileID", namespaces=NAMESPACES) == PROFILE_ID
    assert document.customization_id == CUSTOMIZATION_ID
    assert root.find("cbc:EndpointID", namespaces=NAMESPACES) is None
    endpoint = root.find("cac:AccountingSupplierParty/cac:Party/cbc:EndpointID", namespaces=NAMESPACES)
    assert endpoint.get("schemeID") == "0007"


def test_payment_demand_has_payment_means(renderer, generated_rows, tmp_path):
    row = generated_rows["payment"]

    _, document = _round_trip(renderer, row, tmp_path)

    assert document.document_type == "invoice"
    assert document.payment_id == row["ocr_reference"]
    assert document.due_date == row["due_date"]
    assert document.seller.bankgiro == row["bankgiro"].replace("-", "")


@pytest.mark.parametrize("name", ["credit_note", "zero"])
def test_informational_documents_have_no_payment_means(renderer, generated_rows, tmp_path, name):
    row = generated_rows[name]

    path, document = _round_trip(renderer, row, tmp_path)

    assert document.payment_id is None
    assert document.payment_accounts == ()
    assert b"PaymentMeans" not in path.read_bytes()


def test_credit_note_is_a_creditnote_document(renderer, generated_rows, tmp_path):
    _, document = _round_trip(renderer, generated_rows["credit_note"], tmp_path)

    assert document.document_type == "credit_note"
    assert document.type_code == "381"


def test_peppol_samples_round_trip(conn, ctx, renderer, peppol_samples, tmp_path):
    report = ingest_files(conn, peppol_samples, ready_at=datetime(2026, 3, 1, tzinfo=UTC))
    rows = delivery_rows(conn, plan(conn, ctx, [(invoice_id, "einvoice") for invoice_id in report.invoice_ids]))
    rendered = 0
    for row in rows:
        if row["due_date"] is None and row["document_type"] == "invoice" and row["payable"] > 0:
            continue  # validation quarantines a payment demand without a due date
        _, document = _round_trip(renderer, row, tmp_path)
        _assert_totals_equal(row, document)
        assert document.document_type == row["document_type"]
        rendered += 1
    assert rendered >= len(peppol_samples) - 1


def test_document_allowance_keeps_sums(renderer, tmp_path):
    row = make_row("einvoice", net_total=Decimal("957.60"), line_net_total=Decimal("987.60"),
                   vat_breakdown=[{"vat_category": "S", "vat_rate": Decimal("25.00"),
                                   "taxable_amount": Decimal("957.60"), "tax_amount": Decimal("239.40")}],
                   vat_total=Decimal("239.40"), gross_total=Decimal("1197.00"), payable=Decimal("1197.00"))

    _, document = _round_trip(renderer, row, tmp_path)

    assert document.totals.allowance_total == Decimal("30.00")
    assert document.totals.line_extension - document.totals.allowance_total == document.totals.tax_exclusive


def test_missing_buyer_participant_id_fails(renderer):
    with pytest.raises(RenderError, match="buyer has no Peppol participant id"):
        renderer.einvoice(make_row("einvoice", customer_peppol_id=None))


def test_any_locale_renders_einvoice(renderer, tmp_path):
    row = make_row("einvoice", locale="de")

    _, document = _round_trip(renderer, row, tmp_path)

    assert document.totals.payable == row["payable"]
