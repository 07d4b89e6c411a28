"""Generate synthetic invoices into a real database and check identifiers, contacts and totals."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import phonenumbers
import pytest
from stdnum import luhn
from stdnum.se import orgnr, personnummer

from invoice_delivery.ingest import generator

READY_FROM = datetime(2025, 3, 1, tzinfo=UTC)
READY_UNTIL = datetime(2025, 3, 8, tzinfo=UTC)
CHANNELS = {"mailbox", "sms", "email", "push", "paper"}
TIME_ZONES = {
    "sv": "Europe/Stockholm",
    "en": "Europe/Stockholm",
    "nb": "Europe/Oslo",
    "da": "Europe/Copenhagen",
    "fi": "Europe/Helsinki",
}
CENT = Decimal("0.01")


def run(conn, n: int, **kwargs) -> generator.GenerateReport:
    kwargs.setdefault("ready_from", READY_FROM)
    kwargs.setdefault("ready_until", READY_UNTIL)
    return generator.generate(conn, n, **kwargs)


def rows(conn, query: str) -> list[dict]:
    return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def generated(postgres):
    """Generate 3,000 invoices once into a database shared by the read-only tests below."""
    from invoice_delivery import db, migrate

    name = "invoices_generated_module"
    postgres.ensure_database(name)
    target = postgres.target(name)
    migrate.apply_migrations(target)
    with db.connect(target) as conn:
        report = run(conn, 3000, seed=11)
        conn.commit()
        yield conn, report


def test_generate_writes_invoices_and_customers(generated):
    conn, report = generated

    assert report.invoices == 3000
    assert report.customers == 3000
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM billing.invoice WHERE source = 'generator') AS invoices,"
        " (SELECT count(*) FROM billing.customer WHERE kind = 'person') AS customers,"
        " (SELECT count(*) FROM billing.invoice_line) AS lines,"
        " (SELECT count(*) FROM billing.invoice_vat) AS vat_rows,"
        " (SELECT count(*) FROM billing.invoice i LEFT JOIN billing.customer c USING (customer_id)"
        "   WHERE c.customer_id IS NULL) AS orphans"
    ).fetchone()
    assert counts == {
        "invoices": 3000,
        "customers": 3000,
        "lines": report.lines,
        "vat_rows": report.vat_rows,
        "orphans": 0,
    }
    keys = rows(conn, "SELECT source_key, invoice_number FROM billing.invoice")
    assert all(row["source_key"] == row["invoice_number"] for row in keys)


def test_generated_seller_is_valid(generated):
    conn, report = generated
    seller = conn.execute("SELECT * FROM billing.seller").fetchone()

    assert report.seller_id == seller["seller_id"]
    assert seller["name"] == "Nordlys Energi AB"
    assert orgnr.is_valid(seller["org_number"])
    assert luhn.is_valid(seller["bankgiro"].replace("-", ""))
    assert seller["vat_number"] == "SE" + orgnr.compact(seller["org_number"]) + "01"


def test_generated_ocr_references_pass_luhn(generated):
    conn, _ = generated
    invoices = rows(conn, "SELECT ocr_reference, document_type FROM billing.invoice")
    references = [row["ocr_reference"] for row in invoices if row["document_type"] == "invoice"]

    assert len(references) > 2800
    assert all(luhn.is_valid(reference) for reference in references)
    with_length_digit = [ref for ref in references if int(ref[-2]) == len(ref) % 10]
    # About 30 % carry the length digit, and about a tenth of the rest match it by chance.
    assert len(with_length_digit) > 0.25 * len(references)


def test_luhn_digit_matches_stdnum():
    rng = random.Random(5)
    payloads = [str(rng.randrange(10 ** rng.randrange(1, 25))) for _ in range(5000)]

    for payload in payloads:
        assert generator._luhn_digit(payload) == luhn.calc_check_digit(payload), payload


def test_ocr_table_matches_digit_by_digit():
    numbers = [*range(1, 2500), *range(9_999_000, 10_001_500), 123_456_789_012]
    ocr_numbers = generator._OcrNumbers()

    for number in numbers:
        for with_length_digit in (False, True):
            expected = generator.ocr_reference(str(number), with_length_digit)
            assert ocr_numbers.reference(number, with_length_digit) == expected, (number, with_length_digit)
            assert luhn.is_valid(expected), expected


def test_ocr_length_digit_counts_all_digits():
    reference = generator.ocr_reference("10000001", with_length_digit=True)

    assert reference[:-2] == "10000001"
    assert reference[-2] == str(len(reference) % 10)
    assert luhn.is_valid(reference)


def test_copy_rows_need_no_escaping():
    chunk = generator._InvoiceGenerator(random.Random(3), READY_FROM, READY_UNTIL).chunk(
        range(10_000_001, 10_002_001), range(1, 2001)
    )
    field_counts = {"customers": 15, "invoices": 22, "lines": 10, "vat": 5}

    for table, fields in field_counts.items():
        for row in getattr(chunk, table):
            assert row.endswith("\n") and row.count("\n") == 1, row
            assert row.count("\t") == fields - 1, row
            assert "\\" not in row.replace("\\N", ""), row


def test_generated_personal_numbers_are_valid(generated):
    conn, _ = generated
    numbers = [row["personal_number"] for row in rows(conn, "SELECT personal_number FROM billing.customer")]

    assert all(len(number) == 12 and number.isdigit() for number in numbers)
    assert all(personnummer.is_valid(number) for number in numbers)
    assert all(1940 <= int(number[:4]) <= 2005 for number in numbers)
    assert len(set(numbers)) == len(numbers)


def test_generated_mobiles_in_fiction_range(generated):
    conn, _ = generated
    mobiles = [row["mobile"] for row in rows(conn, "SELECT mobile FROM billing.customer WHERE mobile IS NOT NULL")]

    assert len(mobiles) > 1500
    for mobile in mobiles:
        parsed = phonenumbers.parse(mobile, "SE")
        assert parsed.country_code == 46, mobile
        assert 701740605 <= parsed.national_number <= 701740699, mobile
    written_forms = {
        "international": any(m.startswith("+467") for m in mobiles),
        "national with hyphen": any(m.startswith("070-") and " " in m for m in mobiles),
        "trunk prefix in brackets": any(m.startswith("+46 (0)70") for m in mobiles),
        "00 prefix": any(m.startswith("0046") for m in mobiles),
        "digits only": any(m.isdigit() and m.startswith("07") for m in mobiles),
    }
    assert all(written_forms.values()), written_forms


def test_generated_contacts_are_fictional(generated):
    conn, _ = generated
    customers = rows(conn, "SELECT * FROM billing.customer")

    emails = [c["email"] for c in customers if c["email"]]
    assert emails
    assert all(email.rsplit("@", 1)[1] in {"example.com", "example.org", "example.net"} for email in emails)
    assert all(c["country"] == "SE" and c["street"] and c["postal_code"] and c["city"] for c in customers)
    tokens = [c["push_token"] for c in customers if c["push_token"]]
    assert tokens
    assert all(len(token) == 64 and int(token, 16) >= 0 for token in tokens)


def test_generated_locales_and_time_zones(generated):
    conn, _ = generated
    customers = rows(conn, "SELECT locale, time_zone FROM billing.customer")
    locales = Counter(c["locale"] for c in customers)

    assert set(locales) == set(TIME_ZONES)
    assert locales["sv"] > 0.7 * len(customers)
    assert all(c["time_zone"] == TIME_ZONES[c["locale"]] for c in customers)


def test_generated_channel_preferences(generated):
    conn, _ = generated
    customers = rows(conn, "SELECT channel_preferences, consents FROM billing.customer")
    first_choices = Counter(c["channel_preferences"][0] for c in customers)

    for customer in customers:
        preferences, consents = customer["channel_preferences"], customer["consents"]
        assert preferences, customer
        assert set(preferences) <= CHANNELS, customer
        assert len(set(preferences)) == len(preferences), customer
        assert set(consents) <= set(preferences), customer
    assert first_choices.most_common(2)[0][0] == "mailbox"
    assert first_choices.most_common(2)[1][0] == "sms"
    without_first_choice = [c for c in customers if c["channel_preferences"][0] not in c["consents"]]
    assert 0.03 * len(customers) < len(without_first_choice) < 0.3 * len(customers)


def test_generated_totals_are_consistent(generated):
    conn, _ = generated
    invoices = {row["invoice_id"]: row for row in rows(conn, "SELECT * FROM billing.invoice")}
    lines, vat = {}, {}
    for line in rows(conn, "SELECT * FROM billing.invoice_line ORDER BY invoice_id, line_no"):
        lines.setdefault(line["invoice_id"], []).append(line)
    for row in rows(conn, "SELECT * FROM billing.invoice_vat"):
        vat.setdefault(row["invoice_id"], []).append(row)

    for invoice_id, invoice in invoices.items():
        invoice_lines = lines[invoice_id]
        for line in invoice_lines:
            expected_net = (line["quantity"] * line["unit_price"]).quantize(CENT, ROUND_HALF_UP)
            assert line["net_amount"] == expected_net, line
            assert line["unit_price"] >= 0, line
        assert sum(line["net_amount"] for line in invoice_lines) == invoice["line_net_total"], invoice_id
        assert invoice["net_total"] == invoice["line_net_total"], invoice_id

        taxable_by_rate = {}
        for line in invoice_lines:
            taxable_by_rate[line["vat_rate"]] = taxable_by_rate.get(line["vat_rate"], 0) + line["net_amount"]
        breakdown = {row["vat_rate"]: row for row in vat[invoice_id]}
        assert set(breakdown) == set(taxable_by_rate), invoice_id
        for rate, row in breakdown.items():
            assert row["vat_category"] == "S"
            assert row["taxable_amount"] == taxable_by_rate[rate], invoice_id
            assert row["tax_amount"] == (row["taxable_amount"] * rate / 100).quantize(CENT, ROUND_HALF_UP)
        assert invoice["vat_total"] == sum(row["tax_amount"] for row in breakdown.values()), invoice_id
        assert invoice["gross_total"] == invoice["net_total"] + invoice["vat_total"], invoice_id
        assert invoice["payable"] == invoice["gross_total"] - invoice["prepaid"] + invoice["rounding"], invoice_id
        assert abs(invoice["rounding"]) < 1, invoice_id


def test_generated_document_kinds(generated):
    conn, report = generated
    invoices = rows(conn, "SELECT * FROM billing.invoice")
    credit_notes = [i for i in invoices if i["document_type"] == "credit_note"]
    zero_amount = [i for i in invoices if i["document_type"] == "invoice" and i["payable"] == 0]
    rates = {row["vat_rate"] for row in rows(conn, "SELECT DISTINCT vat_rate FROM billing.invoice_line")}

    assert len(credit_notes) == report.credit_notes
    assert 0.01 * len(invoices) < len(credit_notes) < 0.04 * len(invoices)
    assert 0.003 * len(invoices) < len(zero_amount) < 0.03 * len(invoices)
    assert len(zero_amount) >= report.zero_amount
    assert rates == {Decimal(25), Decimal(12), Decimal(6)}
    for note in credit_notes:
        assert note["type_code"] == "381"
        assert note["due_date"] is None
        assert note["ocr_reference"] is None
        assert note["payable"] > 0
    for invoice in invoices:
        if invoice["document_type"] == "invoice":
            assert invoice["type_code"] == "380"
            assert invoice["due_date"] == invoice["issue_date"] + timedelta(days=30)
            assert invoice["payment_account"] == generator.SELLER["bankgiro"]
            assert invoice["currency"] == "SEK"
    assert any(invoice["prepaid"] > 0 for invoice in invoices)
    assert any(invoice["rounding"] != 0 for invoice in invoices)


def test_generated_ready_at_within_window(generated):
    conn, _ = generated
    invoices = rows(conn, "SELECT ready_at, issue_date FROM billing.invoice")
    days = Counter(invoice["ready_at"].date() for invoice in invoices)

    assert all(READY_FROM <= invoice["ready_at"] < READY_UNTIL for invoice in invoices)
    assert set(days) == {date(2025, 3, day) for day in range(1, 8)}
    assert min(days.values()) > 0.1 * len(invoices)
    assert all(invoice["issue_date"] <= invoice["ready_at"].date() for invoice in invoices)


def snapshot(conn) -> dict[str, list]:
    """Return all generated rows keyed by invoice number instead of the database-assigned ids."""
    return {
        "invoices": rows(
            conn,
            "SELECT i.invoice_number, i.document_type, i.issue_date, i.due_date, i.payable, i.ocr_reference,"
            " i.ready_at, i.customer_id FROM billing.invoice i ORDER BY i.invoice_number",
        ),
        "lines": rows(
            conn,
            "SELECT i.invoice_number, l.line_no, l.description, l.quantity, l.unit_price, l.net_amount"
            " FROM billing.invoice_line l JOIN billing.invoice i USING (invoice_id)"
            " ORDER BY i.invoice_number, l.line_no",
        ),
        "customers": rows(
            conn,
            "SELECT customer_id, name, personal_number, locale, email, mobile, push_token, street,"
            " postal_code, city, channel_preferences, consents FROM billing.customer ORDER BY customer_id",
        ),
    }


def delete_generated(conn) -> None:
    conn.execute("DELETE FROM billing.invoice WHERE source = 'generator'")
    conn.execute("DELETE FROM billing.customer WHERE kind = 'person'")


def test_generate_is_deterministic(conn):
    run(conn, 400, seed=7)
    first = snapshot(conn)
    delete_generated(conn)

    run(conn, 400, seed=7)
    second = snapshot(conn)
    delete_generated(conn)
    run(conn, 400, seed=8)
    other_seed = snapshot(conn)

    assert second == first
    assert other_seed["invoices"] != first["invoices"]
    assert other_seed["customers"] != first["customers"]


def test_second_call_continues_numbering(conn):
    first = run(conn, 100)
    second = run(conn, 50)

    assert first.first_number == generator.DEFAULT_FIRST_NUMBER
    assert second.first_number == first.last_number + 1
    assert second.last_number == first.last_number + 50
    numbers = [int(row["invoice_number"]) for row in rows(conn, "SELECT invoice_number FROM billing.invoice")]
    assert sorted(numbers) == list(range(first.first_number, second.last_number + 1))
    assert conn.execute("SELECT count(*) AS n FROM billing.customer").fetchone()["n"] == 150
    personal_numbers = rows(conn, "SELECT DISTINCT personal_number FROM billing.customer")
    assert len(personal_numbers) == 150


def test_first_number_sets_numbering(conn):
    report = run(conn, 10, first_number=500)

    assert (report.first_number, report.last_number) == (500, 509)
    with pytest.raises(ValueError, match="first_number 505 is not above the largest generated invoice number 509"):
        run(conn, 10, first_number=505)


def test_generate_zero_invoices(conn):
    report = run(conn, 0)

    assert (report.invoices, report.first_number, report.last_number) == (0, None, None)
    assert conn.execute("SELECT count(*) AS n FROM billing.invoice").fetchone()["n"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n is -1"),
        ({"ready_from": datetime(2025, 3, 1)}, "must both be time zone aware"),
        ({"ready_until": READY_FROM}, "is not after ready_from"),
        ({"first_number": 0}, "first_number is 0"),
    ],
)
def test_generate_rejects_bad_arguments(conn, kwargs, message):
    n = kwargs.pop("n", 10)

    with pytest.raises(ValueError, match=message):
        run(conn, n, **kwargs)
