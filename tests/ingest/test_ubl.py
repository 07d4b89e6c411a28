"""Parse and ingest the Peppol BIS Billing 3.0 samples, and reject bad files, on a real database."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from lxml import etree

from invoice_delivery import db
from invoice_delivery.ingest import ubl

NS = {
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
}
READY_AT = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
CREDIT_NOTES = {"base-creditnote-correction.xml", "ubl-tc434-creditnote1.xml"}

MALFORMED = "<Invoice>\n  <ID>1</ID>\n</Invoic>\n"
NOT_UBL = '<?xml version="1.0"?>\n<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2"/>\n'


def sample(samples: list[Path], name: str) -> Path:
    return next(path for path in samples if path.name == name)


def printed_decimal(tree: etree._ElementTree, path: str) -> Decimal:
    """Read an amount straight from the file, zero when the element is absent."""
    values = tree.xpath(path, namespaces=NS)
    return Decimal(values[0].text.strip()) if values else Decimal(0)


def edited_copy(source: Path, target: Path, edit) -> Path:
    tree = etree.parse(str(source))
    edit(tree.getroot())
    tree.write(str(target), xml_declaration=True, encoding="UTF-8")
    return target


def remove(root: etree._Element, path: str) -> None:
    node = root.xpath(path, namespaces=NS)[0]
    node.getparent().remove(node)


def table_counts(conn) -> dict[str, int]:
    tables = ("seller", "customer", "invoice", "invoice_line", "invoice_vat")
    return {table: conn.execute(f"SELECT count(*) AS n FROM billing.{table}").fetchone()["n"] for table in tables}


def row_versions(conn) -> dict[str, list]:
    """Return each billing row's xmin and updated_at: any UPDATE changes the xmin."""
    queries = {
        "invoice": "SELECT invoice_id, xmin::text, updated_at FROM billing.invoice ORDER BY 1",
        "customer": "SELECT customer_id, xmin::text, updated_at FROM billing.customer ORDER BY 1",
        "seller": "SELECT seller_id, xmin::text FROM billing.seller ORDER BY 1",
        "invoice_line": "SELECT invoice_id, line_no, xmin::text FROM billing.invoice_line ORDER BY 1, 2",
    }
    return {name: [tuple(row.values()) for row in conn.execute(query)] for name, query in queries.items()}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def test_samples_parse_to_printed_totals(peppol_samples):
    assert len(peppol_samples) == 7
    for path in peppol_samples:
        document = ubl.parse_document(path)
        tree = etree.parse(str(path))
        total = "/*/cac:LegalMonetaryTotal/"

        assert document.totals.line_extension == printed_decimal(tree, total + "cbc:LineExtensionAmount"), path.name
        assert document.totals.tax_exclusive == printed_decimal(tree, total + "cbc:TaxExclusiveAmount"), path.name
        assert document.totals.tax_inclusive == printed_decimal(tree, total + "cbc:TaxInclusiveAmount"), path.name
        assert document.totals.allowance_total == printed_decimal(tree, total + "cbc:AllowanceTotalAmount"), path.name
        assert document.totals.charge_total == printed_decimal(tree, total + "cbc:ChargeTotalAmount"), path.name
        assert document.totals.prepaid == printed_decimal(tree, total + "cbc:PrepaidAmount"), path.name
        assert document.totals.rounding == printed_decimal(tree, total + "cbc:PayableRoundingAmount"), path.name
        assert document.totals.payable == printed_decimal(tree, total + "cbc:PayableAmount"), path.name
        assert document.vat_total == printed_decimal(tree, "/*/cac:TaxTotal/cbc:TaxAmount"), path.name

        printed_breakdown = [
            (
                node.xpath("cac:TaxCategory/cbc:ID", namespaces=NS)[0].text.strip(),
                Decimal(node.xpath("cac:TaxCategory/cbc:Percent", namespaces=NS)[0].text),
                Decimal(node.xpath("cbc:TaxableAmount", namespaces=NS)[0].text),
                Decimal(node.xpath("cbc:TaxAmount", namespaces=NS)[0].text),
            )
            for node in tree.xpath("/*/cac:TaxTotal/cac:TaxSubtotal", namespaces=NS)
        ]
        parsed_breakdown = [(s.category, s.rate, s.taxable_amount, s.tax_amount) for s in document.vat_breakdown]
        assert parsed_breakdown == printed_breakdown, path.name

        printed_lines = tree.xpath("/*/cac:InvoiceLine | /*/cac:CreditNoteLine", namespaces=NS)
        assert len(document.lines) == len(printed_lines), path.name
        assert sum(line.net_amount for line in document.lines) == document.totals.line_extension, path.name


def test_samples_amounts_are_decimal(peppol_samples):
    for path in peppol_samples:
        document = ubl.parse_document(path)
        amounts = [document.vat_total, document.totals.payable, document.totals.tax_inclusive]
        amounts += [line.net_amount for line in document.lines] + [line.quantity for line in document.lines]
        assert all(type(amount) is Decimal for amount in amounts), path.name


def test_samples_document_types(peppol_samples):
    for path in peppol_samples:
        document = ubl.parse_document(path)
        if path.name in CREDIT_NOTES:
            assert document.document_type == "credit_note", path.name
            assert document.type_code == "381", path.name
            assert document.due_date is None, path.name
        else:
            assert document.document_type == "invoice", path.name
            assert document.type_code == "380", path.name


def test_norwegian_example_fields(peppol_samples):
    document = ubl.parse_document(sample(peppol_samples, "Norwegian-example-1.xml"))

    assert document.invoice_number == "TOSL108"
    assert document.currency == "NOK"
    assert document.issue_date == date(2013, 6, 30)
    assert document.due_date == date(2013, 7, 20)
    assert document.buyer_reference == "3150bdn"
    assert document.note == "Ordered in our booth at the convention."
    assert document.payment_id == "0003434323213231"
    assert document.payment_account == "NO9386011117947"

    assert document.seller.name == "The Sellercompany ASA"
    assert document.seller.trading_name == "Salescompany ltd."
    assert document.seller.endpoint_id == "0192:123456785"
    assert document.seller.legal_id == "123456785"
    assert document.seller.legal_id_scheme == "0192"
    assert document.seller.vat_number == "NO123456785MVA"  # the VAT scheme, not the TAX one
    assert document.seller.iban == "NO9386011117947"
    assert document.seller.bankgiro is None
    assert document.seller.address.street_lines == "Main street 34, Suite 123"

    assert document.buyer.endpoint_id == "0192:987654325"
    assert document.buyer.country == "NO"
    assert document.buyer.email == "john@buyercompany.no"
    assert document.buyer.phone == "5121230"
    assert document.buyer.iban is None

    assert document.totals.prepaid == Decimal("1000")
    assert document.totals.rounding == Decimal("0.22")
    assert document.totals.payable == Decimal("802.00")
    assert [(s.category, s.rate) for s in document.vat_breakdown] == [
        ("S", Decimal(25)),
        ("S", Decimal(15)),
        ("E", Decimal(0)),
    ]
    assert document.vat_breakdown[2].exemption_reason == "Exempt New Means of Transport"

    first, second = document.lines[0], document.lines[1]
    assert first.name == "Laptop computer"
    assert first.description == "Processor: Intel Core 2 Duo SU9400 LV (1.4GHz). RAM: 3MB. Screen 1440x900"
    assert first.unit_code == "NAR"
    assert first.unit_price == Decimal("1273")
    assert second.quantity == Decimal("-1")
    assert second.net_amount == Decimal("-3.96")
    assert second.vat_rate == Decimal("15")


def test_credit_note_fields(peppol_samples):
    document = ubl.parse_document(sample(peppol_samples, "ubl-tc434-creditnote1.xml"))

    assert document.invoice_number == "018304 / 28865"
    assert document.due_date is None
    assert document.lines[0].quantity == Decimal("1.00")
    assert document.lines[0].unit_code == "C62"
    assert document.seller.iban == "BE91000000143476"
    assert document.buyer.endpoint_id == "0201:0000000295"
    assert document.buyer.email == "pete.smith@mycustomercompany.be"


def test_correction_credit_note_references_invoice(peppol_samples):
    document = ubl.parse_document(sample(peppol_samples, "base-creditnote-correction.xml"))

    assert document.preceding_invoice == "Snippet1"
    assert document.note == "Please note we have a new phone number: 22 22 22 22"


def test_due_date_from_payment_means(peppol_samples, tmp_path):
    def add_payment_due_date(root):
        means = root.xpath("cac:PaymentMeans", namespaces=NS)[0]
        due = etree.SubElement(means, f"{{{NS['cbc']}}}PaymentDueDate")
        due.text = "2019-10-23"
        means.insert(1, due)

    path = edited_copy(sample(peppol_samples, "ubl-tc434-creditnote1.xml"), tmp_path / "cn.xml", add_payment_due_date)

    assert ubl.parse_document(path).due_date == date(2019, 10, 23)


def test_due_date_from_payment_terms(peppol_samples, tmp_path):
    def move_due_date_to_terms(root):
        remove(root, "cbc:DueDate")
        terms = root.xpath("cac:PaymentTerms", namespaces=NS)[0]
        etree.SubElement(terms, f"{{{NS['cbc']}}}PaymentDueDate").text = "2017-12-24"

    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "terms.xml", move_due_date_to_terms)

    assert ubl.parse_document(path).due_date == date(2017, 12, 24)


def test_bankgiro_and_plusgiro_accounts(peppol_samples, tmp_path):
    def swedish_accounts(root):
        means = root.xpath("cac:PaymentMeans", namespaces=NS)[0]
        account = means.xpath("cac:PayeeFinancialAccount", namespaces=NS)[0]
        account.xpath("cbc:ID", namespaces=NS)[0].text = "5050-1055"
        account.xpath("cac:FinancialInstitutionBranch/cbc:ID", namespaces=NS)[0].text = "SE:BANKGIRO"
        plusgiro = etree.fromstring(etree.tostring(means))
        plusgiro.xpath("cac:PayeeFinancialAccount/cbc:ID", namespaces=NS)[0].text = "4711-2"
        branch = plusgiro.xpath("cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID", namespaces=NS)
        branch[0].text = "SE:PLUSGIRO"
        means.addnext(plusgiro)

    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "se.xml", swedish_accounts)
    document = ubl.parse_document(path)

    assert document.seller.bankgiro == "5050-1055"
    assert document.seller.plusgiro == "4711-2"
    assert document.seller.iban is None
    assert document.payment_account == "5050-1055"


@pytest.mark.parametrize(
    ("name", "content", "error", "expected"),
    [
        ("broken.xml", MALFORMED, ubl.MalformedXml, "broken.xml line 3: not well-formed XML"),
        ("empty.xml", "", ubl.MalformedXml, "empty.xml line 1: not well-formed XML: Document is empty"),
        ("order.xml", NOT_UBL, ubl.NotUbl, "order.xml line 2: root element is"),
    ],
)
def test_parse_rejects_bad_xml(tmp_path, name, content, error, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    with pytest.raises(error) as raised:
        ubl.parse_document(path)

    assert str(raised.value).startswith(expected)
    assert raised.value.file == name


def test_parse_rejects_invoice_without_namespace(tmp_path):
    path = tmp_path / "plain.xml"
    path.write_text("<Invoice><ID>1</ID></Invoice>", encoding="utf-8")

    with pytest.raises(ubl.NotUbl, match="plain.xml line 1: root element is Invoice, not a UBL 2.1"):
        ubl.parse_document(path)


@pytest.mark.parametrize(
    ("edit", "error", "expected"),
    [
        (lambda root: remove(root, "cbc:IssueDate"), ubl.MissingElement, "line 2: missing cbc:IssueDate in Invoice"),
        (
            lambda root: remove(root, "cac:LegalMonetaryTotal/cbc:PayableAmount"),
            ubl.MissingElement,
            "missing cbc:PayableAmount in cac:LegalMonetaryTotal",
        ),
        (
            lambda root: [remove(root, f"cac:InvoiceLine[2]/cac:Item/cbc:{name}") for name in ("Name", "Description")],
            ubl.MissingElement,
            "missing cbc:Name in cac:Item",
        ),
        (
            lambda root: [remove(root, "cac:InvoiceLine") for _ in range(2)],
            ubl.MissingElement,
            "missing cac:InvoiceLine in Invoice",
        ),
        (
            lambda root: remove(root, "cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cac:Country"),
            ubl.MissingElement,
            "missing cac:Country/cbc:IdentificationCode in cac:PostalAddress",
        ),
        (
            lambda root: root.xpath("cac:TaxTotal", namespaces=NS)[0].append(
                etree.fromstring(etree.tostring(root.xpath("cac:TaxTotal/cac:TaxSubtotal", namespaces=NS)[0]))
            ),
            ubl.InvalidValue,
            "second cac:TaxSubtotal for VAT category S at 25.0 %",
        ),
        (
            lambda root: setattr(root.xpath("cbc:IssueDate", namespaces=NS)[0], "text", "13.11.2017"),
            ubl.InvalidValue,
            "invalid date '13.11.2017' in cbc:IssueDate; expected YYYY-MM-DD",
        ),
        (
            lambda root: setattr(
                root.xpath("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS)[0], "text", "1 656,25"
            ),
            ubl.InvalidValue,
            "invalid number '1 656,25' in cbc:PayableAmount",
        ),
        (
            lambda root: setattr(
                root.xpath("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS)[0], "text", "1.65625E3"
            ),
            ubl.InvalidValue,
            "invalid number '1.65625E3' in cbc:PayableAmount",
        ),
    ],
    ids=[
        "issue-date", "payable", "item-name", "no-lines", "country", "duplicate-vat", "bad-date", "bad-number",
        "exponent",
    ],
)  # fmt: skip
def test_parse_rejects_incomplete_invoice(peppol_samples, tmp_path, edit, error, expected):
    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "base.xml", edit)

    with pytest.raises(error) as raised:
        ubl.parse_document(path)

    assert str(raised.value).startswith("base.xml line ")
    assert expected in str(raised.value)


# ---------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------


def test_ingest_samples_inserts_all(conn, peppol_samples):
    listing_before = sorted(path.name for path in peppol_samples[0].parent.iterdir())
    line_count = sum(len(ubl.parse_document(path).lines) for path in peppol_samples)
    vat_count = sum(len(ubl.parse_document(path).vat_breakdown) for path in peppol_samples)

    report = ubl.ingest_files(conn, peppol_samples, ready_at=READY_AT)

    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (7, 0, 0, [])
    assert len(report.invoice_ids) == 7
    assert table_counts(conn) == {
        "seller": 4,
        "customer": 4,
        "invoice": 7,
        "invoice_line": line_count,
        "invoice_vat": vat_count,
    }
    assert sorted(path.name for path in peppol_samples[0].parent.iterdir()) == listing_before


def test_ingest_writes_invoice_columns(conn, peppol_samples):
    ubl.ingest_files(conn, peppol_samples, ready_at=READY_AT)

    invoice = conn.execute("SELECT * FROM billing.invoice WHERE source_file = 'Norwegian-example-1.xml'").fetchone()
    assert invoice["source"] == "ubl"
    assert invoice["source_key"] == "0192:123456785:invoice:TOSL108"
    assert invoice["seller_id"] == "0192:123456785"
    assert invoice["customer_id"] == "peppol:0192:987654325"
    assert invoice["ready_at"] == READY_AT
    assert invoice["line_net_total"] == Decimal("1436.50")
    assert invoice["net_total"] == Decimal("1436.50")
    assert invoice["vat_total"] == Decimal("365.28")
    assert invoice["gross_total"] == Decimal("1801.78")
    assert invoice["prepaid"] == Decimal("1000.00")
    assert invoice["rounding"] == Decimal("0.22")
    assert invoice["payable"] == Decimal("802.00")
    assert invoice["ocr_reference"] == "0003434323213231"
    assert invoice["payment_account"] == "NO9386011117947"

    lines = conn.execute(
        "SELECT line_no, line_id, description, quantity, unit_price, net_amount, vat_category, vat_rate"
        " FROM billing.invoice_line WHERE invoice_id = %s ORDER BY line_no",
        (invoice["invoice_id"],),
    ).fetchall()
    assert [line["line_id"] for line in lines] == ["1", "2", "3", "4", "5"]
    assert lines[0]["description"] == "Laptop computer"
    assert lines[4]["quantity"] == Decimal("250")
    assert lines[4]["unit_price"] == Decimal("0.75")
    assert sum(line["net_amount"] for line in lines) == invoice["line_net_total"]

    credit_note = conn.execute(
        "SELECT * FROM billing.invoice WHERE source_key = '0088:9482348239847239874:credit_note:Snippet1'"
    ).fetchone()
    assert credit_note["document_type"] == "credit_note"
    assert credit_note["type_code"] == "381"
    assert credit_note["due_date"] is None


def test_ingest_writes_allowances_and_charges(conn, peppol_samples):
    ubl.ingest_files(conn, [sample(peppol_samples, "Vat-category-S.xml")], ready_at=READY_AT)
    invoice = conn.execute("SELECT * FROM billing.invoice").fetchone()

    assert invoice["allowance_total"] == Decimal("100")
    assert invoice["charge_total"] == Decimal("200")
    assert invoice["net_total"] == invoice["line_net_total"] - invoice["allowance_total"] + invoice["charge_total"]


def test_amounts_kept_exactly_for_validation(conn, peppol_samples, tmp_path):
    def three_decimals(root):
        root.xpath("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS)[0].text = "1656.255"
        root.xpath("cac:InvoiceLine[1]/cbc:InvoicedQuantity", namespaces=NS)[0].text = "7.123456"
        root.xpath("cac:InvoiceLine[1]/cac:Price/cbc:PriceAmount", namespaces=NS)[0].text = "400.123456"

    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "exact.xml", three_decimals)

    document = ubl.parse_document(path)
    first = ubl.ingest_files(conn, [path], ready_at=READY_AT)
    second = ubl.ingest_files(conn, [path], ready_at=READY_AT)

    assert document.totals.payable == Decimal("1656.255")
    assert (first.inserted, second.unchanged) == (1, 1)
    assert conn.execute("SELECT payable FROM billing.invoice").fetchone()["payable"] == Decimal("1656.255")
    line = conn.execute("SELECT quantity, unit_price FROM billing.invoice_line WHERE line_no = 1").fetchone()
    assert line == {"quantity": Decimal("7.123456"), "unit_price": Decimal("400.123456")}


def test_long_amount_parses_exactly(peppol_samples, tmp_path):
    digits = "1234567890123456789012345678901.125"

    def long_amount(root):
        root.xpath("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS)[0].text = digits

    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "long.xml", long_amount)

    assert ubl.parse_document(path).totals.payable == Decimal(digits)


def test_buyer_mobile_kept_when_mobile(conn, peppol_samples, tmp_path):
    def swedish_mobile(root):
        root.xpath("cac:AccountingCustomerParty/cac:Party/cac:Contact/cbc:Telephone", namespaces=NS)[
            0
        ].text = "070-174 06 42"

    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "mobile.xml", swedish_mobile)

    ubl.ingest_files(conn, [path], ready_at=READY_AT)

    assert conn.execute("SELECT mobile FROM billing.customer").fetchone()["mobile"] == "070-174 06 42"


def test_ingest_writes_business_customers(conn, peppol_samples):
    ubl.ingest_files(conn, peppol_samples, ready_at=READY_AT)
    customers = {row["customer_id"]: row for row in conn.execute("SELECT * FROM billing.customer")}

    norwegian = customers["peppol:0192:987654325"]
    assert norwegian["kind"] == "business"
    assert norwegian["name"] == "Buyercompany ASA"
    assert norwegian["org_number"] == "987654325"
    assert norwegian["vat_number"] == "NO987654325MVA"
    assert norwegian["peppol_id"] == "0192:987654325"
    assert (norwegian["locale"], norwegian["time_zone"]) == ("nb", "Europe/Oslo")
    assert norwegian["channel_preferences"] == ["einvoice", "email", "paper"]
    assert norwegian["consents"] == ["einvoice", "email", "paper"]
    assert (norwegian["street"], norwegian["postal_code"], norwegian["city"], norwegian["country"]) == (
        "Anystreet 8, Back door",
        "101",
        "Anytown",
        "NO",
    )

    assert norwegian["mobile"] is None  # 5121230 is not a Norwegian mobile number

    danish = customers["peppol:0184:12345678"]
    assert (danish["locale"], danish["time_zone"]) == ("da", "Europe/Copenhagen")
    assert danish["email"] is None
    assert danish["consents"] == ["einvoice", "paper"]

    belgian = customers["peppol:0201:0000000295"]
    assert (belgian["locale"], belgian["time_zone"]) == ("en", "Europe/Brussels")

    swedish = customers["peppol:0002:FR23342"]
    assert (swedish["locale"], swedish["time_zone"]) == ("sv", "Europe/Stockholm")


def test_ingest_commits_each_file(conn, invoice_db, peppol_samples):
    ubl.ingest_files(conn, peppol_samples[:2], ready_at=READY_AT)

    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db.connect(invoice_db) as other:
        assert other.execute("SELECT count(*) AS n FROM billing.invoice").fetchone()["n"] == 2


def test_reingest_changes_nothing(conn, peppol_samples):
    ubl.ingest_files(conn, peppol_samples, ready_at=READY_AT)
    counts_before, versions_before = table_counts(conn), row_versions(conn)

    report = ubl.ingest_files(conn, peppol_samples, ready_at=datetime(2025, 4, 1, tzinfo=UTC))

    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (0, 0, 7, [])
    assert report.invoice_ids == []
    assert table_counts(conn) == counts_before
    assert row_versions(conn) == versions_before


def test_edited_copy_updates_invoice(conn, peppol_samples, tmp_path):
    original = sample(peppol_samples, "base-example.xml")
    ubl.ingest_files(conn, [original], ready_at=READY_AT)
    before = conn.execute("SELECT * FROM billing.invoice").fetchone()

    def correct(root):
        root.xpath("cbc:BuyerReference", namespaces=NS)[0].text = "0150xyz"
        remove(root, "cac:InvoiceLine[2]")

    corrected = edited_copy(original, tmp_path / "base-example.xml", correct)
    report = ubl.ingest_files(conn, [corrected], ready_at=datetime(2025, 4, 1, tzinfo=UTC))

    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 0)
    after = conn.execute("SELECT * FROM billing.invoice").fetchone()
    assert after["invoice_id"] == before["invoice_id"]
    assert after["buyer_reference"] == "0150xyz"
    assert after["updated_at"] > before["updated_at"]
    assert after["ready_at"] == READY_AT
    lines = conn.execute("SELECT line_id FROM billing.invoice_line ORDER BY line_no").fetchall()
    assert [line["line_id"] for line in lines] == ["1"]
    assert table_counts(conn)["invoice"] == 1


def test_bad_files_rejected_and_moved(conn, peppol_samples, tmp_path):
    inbox, rejected_dir = tmp_path / "inbox", tmp_path / "rejected"
    inbox.mkdir()
    for name in ("base-example.xml", "Norwegian-example-1.xml"):
        shutil.copy(sample(peppol_samples, name), inbox / name)
    (inbox / "broken.xml").write_text(MALFORMED, encoding="utf-8")
    (inbox / "order.xml").write_text(NOT_UBL, encoding="utf-8")
    edited_copy(
        sample(peppol_samples, "base-example.xml"), inbox / "no-issue-date.xml", lambda r: remove(r, "cbc:IssueDate")
    )

    report = ubl.ingest_directory(conn, inbox, ready_at=READY_AT, rejected_dir=rejected_dir)

    assert report.inserted == 2
    reasons = {rejected.file: rejected.reason for rejected in report.rejected}
    assert sorted(reasons) == ["broken.xml", "no-issue-date.xml", "order.xml"]
    assert reasons["broken.xml"].startswith("broken.xml line 3: not well-formed XML")
    assert reasons["order.xml"].startswith("order.xml line 2: root element is")
    assert reasons["no-issue-date.xml"] == "no-issue-date.xml line 2: missing cbc:IssueDate in Invoice"

    assert sorted(path.name for path in inbox.iterdir()) == ["Norwegian-example-1.xml", "base-example.xml"]
    for name, reason in reasons.items():
        assert (rejected_dir / name).is_file()
        assert (rejected_dir / f"{name}.reason.txt").read_text(encoding="utf-8") == reason + "\n"
    assert {rejected.moved_to for rejected in report.rejected} == {rejected_dir / name for name in reasons}
    assert table_counts(conn)["invoice"] == 2


def test_buyer_without_endpoint_uses_legal_id(conn, peppol_samples, tmp_path):
    path = edited_copy(
        sample(peppol_samples, "base-example.xml"),
        tmp_path / "no-endpoint.xml",
        lambda root: remove(root, "cac:AccountingCustomerParty/cac:Party/cbc:EndpointID"),
    )

    report = ubl.ingest_files(conn, [path], ready_at=READY_AT)

    assert report.inserted == 1
    customer = conn.execute("SELECT * FROM billing.customer").fetchone()
    assert customer["customer_id"] == "legal:0183:39937423947"
    assert customer["peppol_id"] is None
    assert customer["channel_preferences"] == ["email", "paper"]
    assert customer["consents"] == ["email", "paper"]


def test_buyer_without_any_id_rejected(conn, peppol_samples, tmp_path):
    def remove_buyer_ids(root):
        remove(root, "cac:AccountingCustomerParty/cac:Party/cbc:EndpointID")
        remove(root, "cac:AccountingCustomerParty/cac:Party/cac:PartyLegalEntity/cbc:CompanyID")

    path = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "anonymous.xml", remove_buyer_ids)

    report = ubl.ingest_files(conn, [path], ready_at=READY_AT)

    assert report.inserted == 0
    assert report.rejected[0].reason.startswith(
        "anonymous.xml: missing cbc:EndpointID in cac:AccountingCustomerParty/cac:Party"
    )
    assert table_counts(conn)["customer"] == 0


def test_database_error_rejects_only_that_file(conn, peppol_samples, tmp_path):
    def huge_payable(root):
        # More digits than any PostgreSQL numeric column takes (131,072 before the decimal point).
        root.xpath("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS)[0].text = "9" * 140_000 + ".00"

    huge = edited_copy(sample(peppol_samples, "base-example.xml"), tmp_path / "huge.xml", huge_payable)
    good = sample(peppol_samples, "Norwegian-example-1.xml")

    report = ubl.ingest_files(conn, [huge, good], ready_at=READY_AT, rejected_dir=tmp_path / "rejected")

    assert report.inserted == 1
    assert [rejected.file for rejected in report.rejected] == ["huge.xml"]
    assert report.rejected[0].reason.startswith("huge.xml: the database rejected the invoice: ")
    assert (tmp_path / "rejected" / "huge.xml").is_file()
    assert table_counts(conn) == {
        "seller": 1,
        "customer": 1,
        "invoice": 1,
        "invoice_line": 5,
        "invoice_vat": 3,
    }


def test_bad_file_stays_without_rejected_dir(conn, tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text(MALFORMED, encoding="utf-8")

    report = ubl.ingest_files(conn, [bad], ready_at=READY_AT)

    assert report.rejected_count == 1
    assert report.rejected[0].moved_to is None
    assert bad.read_text(encoding="utf-8") == MALFORMED


def test_ingest_requires_aware_ready_at(conn, peppol_samples):
    with pytest.raises(ValueError, match="has no time zone"):
        ubl.ingest_files(conn, peppol_samples, ready_at=datetime(2025, 3, 1))


def test_ingest_logs_without_personal_data(conn, peppol_samples, caplog):
    caplog.set_level("INFO", logger="invoice_delivery.ingest.ubl")

    ubl.ingest_files(conn, peppol_samples, ready_at=READY_AT)

    file_lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("UBL file")]
    assert len(file_lines) == 7
    assert "UBL file Norwegian-example-1.xml: invoice TOSL108 inserted" in file_lines[0]
    assert not any("@" in line or "5121230" in line for line in file_lines)
