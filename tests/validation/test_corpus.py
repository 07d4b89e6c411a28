"""A corpus of broken invoices, one per rule and some combinations, validated with the real suite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from invoice_delivery.context import RunContext
from invoice_delivery.extract import extract_window
from invoice_delivery.ingest.generator import generate
from invoice_delivery.validation import BatchGuardError, check_quarantine_rate, validate_batch
from invoice_delivery.validation.run import check_schema, load_frame

CTX = RunContext(dag_id="invoice_delivery", run_id="corpus-run", task_id="validate")

# Each breakage: SQL applied to one generated invoice (%(id)s), and the rules it must trip.
BREAKAGES: dict[str, tuple[list[str], set[str]]] = {
    "missing_currency": (["UPDATE billing.invoice SET currency = NULL WHERE invoice_id = %(id)s"],
                         {"required_currency"}),
    "unknown_currency": (["UPDATE billing.invoice SET currency = 'SEKK' WHERE invoice_id = %(id)s"],
                         {"currency_iso4217"}),
    "duplicate_number": (["UPDATE billing.invoice SET invoice_number = (SELECT invoice_number FROM billing.invoice"
                          " WHERE invoice_id = %(id)s - 1) WHERE invoice_id = %(id)s"],
                         {"invoice_number_unique"}),
    "three_decimals": (["UPDATE billing.invoice SET payable = payable + 0.001, gross_total = gross_total + 0.001"
                        " WHERE invoice_id = %(id)s"], {"amounts_two_decimals"}),
    "lines_do_not_sum": (["UPDATE billing.invoice_line SET net_amount = net_amount + 1"
                          " WHERE invoice_id = %(id)s AND line_no = 1"], {"line_total_matches_lines"}),
    "vat_rounded_per_line": (["UPDATE billing.invoice_vat SET tax_amount = tax_amount + 0.01"
                              " WHERE invoice_id = %(id)s",
                              "UPDATE billing.invoice SET vat_total = vat_total + 0.01 * (SELECT count(*) FROM"
                              " billing.invoice_vat WHERE invoice_id = %(id)s), gross_total = gross_total + 0.01 *"
                              " (SELECT count(*) FROM billing.invoice_vat WHERE invoice_id = %(id)s),"
                              " payable = payable + 0.01 * (SELECT count(*) FROM billing.invoice_vat"
                              " WHERE invoice_id = %(id)s) WHERE invoice_id = %(id)s"],
                             {"vat_per_rate"}),
    "gross_wrong": (["UPDATE billing.invoice SET gross_total = gross_total + 5, payable = payable + 5"
                     " WHERE invoice_id = %(id)s"], {"gross_total_matches"}),
    "payable_wrong": (["UPDATE billing.invoice SET payable = payable + 3 WHERE invoice_id = %(id)s"],
                      {"payable_matches"}),
    "rate_not_swedish": (["UPDATE billing.invoice_line SET vat_rate = 7 WHERE invoice_id = %(id)s"],
                         {"vat_rate_allowed"}),
    "due_before_issue": (["UPDATE billing.invoice SET due_date = issue_date - 1 WHERE invoice_id = %(id)s"],
                         {"due_date_valid"}),
    "ocr_check_digit": (["UPDATE billing.invoice SET ocr_reference = ocr_reference || '1' WHERE invoice_id = %(id)s"
                         " AND right(ocr_reference, 1) <> '1'",
                         "UPDATE billing.invoice SET ocr_reference = '1234567890' WHERE invoice_id = %(id)s"],
                        {"ocr_valid"}),
    "mobile_not_a_number": (["UPDATE billing.customer SET mobile = '070-12' WHERE customer_id ="
                             " (SELECT customer_id FROM billing.invoice WHERE invoice_id = %(id)s)"], {"mobile_valid"}),
    "email_syntax": (["UPDATE billing.customer SET email = 'anna.example.com' WHERE customer_id ="
                      " (SELECT customer_id FROM billing.invoice WHERE invoice_id = %(id)s)"], {"email_valid"}),
    "personal_number": (["UPDATE billing.customer SET personal_number = '198001011235' WHERE customer_id ="
                         " (SELECT customer_id FROM billing.invoice WHERE invoice_id = %(id)s)"],
                        {"personal_number_valid"}),
    "peppol_id": (["UPDATE billing.customer SET peppol_id = '0007:5560000000' WHERE customer_id ="
                   " (SELECT customer_id FROM billing.invoice WHERE invoice_id = %(id)s)"], {"peppol_id_valid"}),
    "customer_missing": (["UPDATE billing.invoice SET customer_id = 'no-such-customer' WHERE invoice_id = %(id)s"],
                         {"customer_exists"}),
    "bankgiro": (["INSERT INTO billing.seller (seller_id, name, country, bankgiro)"
                  " VALUES ('bad-giro', 'Felgiro AB', 'SE', '5050-1056')",
                  "UPDATE billing.invoice SET seller_id = 'bad-giro' WHERE invoice_id = %(id)s"], {"bankgiro_valid"}),
    "combination": (["UPDATE billing.invoice SET due_date = issue_date - 1, currency = 'XYZ'"
                     " WHERE invoice_id = %(id)s"], {"due_date_valid", "currency_iso4217"}),
}


@pytest.fixture
def corpus(conn):
    """Generate good invoices, break one per corpus entry, extract them into one batch."""
    now = datetime.now(UTC)
    generate(conn, 60, seed=21, ready_from=now - timedelta(minutes=5), ready_until=now - timedelta(seconds=1))
    ids = [r["invoice_id"] for r in conn.execute(
        "SELECT invoice_id FROM billing.invoice WHERE document_type = 'invoice' AND payable > 0 ORDER BY 1")]
    broken = {}
    for (name, (statements, rules)), invoice_id in zip(BREAKAGES.items(), ids[1::2], strict=False):
        for statement in statements:
            conn.execute(statement, {"id": invoice_id})
        broken[invoice_id] = (name, rules)
    assert len(broken) == len(BREAKAGES)
    [batch_id] = extract_window(conn, CTX, now - timedelta(minutes=5), now, batch_size=1000)
    conn.commit()
    return batch_id, broken


def test_each_broken_invoice_quarantined_with_its_rules(conn, corpus):
    batch_id, broken = corpus

    outcome = validate_batch(conn, CTX, batch_id)

    quarantined = {r["invoice_id"]: {reason["rule"] for reason in r["reasons"]}
                   for r in conn.execute("SELECT invoice_id, reasons FROM delivery.quarantine")}
    for invoice_id, (name, rules) in broken.items():
        assert invoice_id in quarantined, f"{name}: invoice {invoice_id} was not quarantined"
        assert rules <= quarantined[invoice_id], f"{name}: expected {rules}, got {quarantined[invoice_id]}"
    extra = set(quarantined) - set(broken)
    duplicate_partners = {i - 1 for i, (name, _) in broken.items() if name == "duplicate_number"}
    assert extra <= duplicate_partners, f"good invoices quarantined: {extra - duplicate_partners}"
    assert outcome.quarantined == len(quarantined)
    assert outcome.passed == outcome.validated - outcome.quarantined


def test_reasons_are_readable_and_masked(conn, corpus):
    batch_id, broken = corpus

    validate_batch(conn, CTX, batch_id)

    by_name = {name: invoice_id for invoice_id, (name, _) in broken.items()}
    reasons = conn.execute("SELECT reasons FROM delivery.quarantine WHERE invoice_id = %s",
                           (by_name["personal_number"],)).fetchone()["reasons"]
    [reason] = [r for r in reasons if r["rule"] == "personal_number_valid"]
    assert reason["column"] == "personal_number"
    assert reason["value"] != "198001011235"
    assert "*" in reason["value"]
    assert reason["message"] == "the personal identity number is invalid"
    audit = conn.execute("SELECT count(*) AS n FROM delivery.audit_event WHERE event_type = 'quarantined'").fetchone()
    assert audit["n"] >= len(broken)


def test_result_stored_for_people(conn, corpus):
    batch_id, _ = corpus

    validate_batch(conn, CTX, batch_id)

    stored = conn.execute("SELECT * FROM delivery.validation_result WHERE batch_id = %s", (batch_id,)).fetchone()
    assert stored["validated"] == 60
    assert stored["by_rule"]["vat_rate_allowed"] == 1
    assert stored["result"]["success"] is False


def test_threshold_guard_stops_run():
    with pytest.raises(BatchGuardError, match="threshold guard: 30 of 100"):
        check_quarantine_rate([{"validated": 100, "quarantined": 30}], 0.2)
    check_quarantine_rate([{"validated": 100, "quarantined": 20}], 0.2)


def test_schema_guard_stops_on_wrong_type(conn, corpus):
    batch_id, _ = corpus
    frame = load_frame(conn, batch_id)
    frame["payable"] = frame["payable"].astype(float)

    with pytest.raises(BatchGuardError, match="column payable holds float64 values, expected Decimal"):
        check_schema(frame)
    with pytest.raises(BatchGuardError, match=r"columns \['currency'\] are missing"):
        check_schema(frame.drop(columns=["currency"]))


def test_empty_batch_guard(conn, corpus):
    batch_id, _ = corpus
    # Sellers are referenced by invoices, so the table is swapped for an empty one instead of emptied.
    conn.execute("ALTER TABLE billing.seller RENAME TO seller_hidden")
    conn.execute("CREATE TABLE billing.seller (LIKE billing.seller_hidden)")

    with pytest.raises(BatchGuardError, match="empty-batch guard: batch .* has 60 extracted invoices but 0"):
        validate_batch(conn, CTX, batch_id)


def test_corrected_invoice_released_and_passes(conn, corpus):
    batch_id, broken = corpus
    validate_batch(conn, CTX, batch_id)
    conn.commit()
    invoice_id = next(i for i, (name, _) in broken.items() if name == "due_before_issue")
    conn.execute("UPDATE billing.invoice SET due_date = issue_date + 30, updated_at = now() WHERE invoice_id = %s",
                 (invoice_id,))
    conn.commit()
    later = RunContext(dag_id="invoice_delivery", run_id="later-run", task_id="extract")
    now = datetime.now(UTC)

    batches = extract_window(conn, later, now - timedelta(minutes=5), now)
    for batch in batches:
        validate_batch(conn, later, batch)

    released = conn.execute("SELECT released_at, released_run_id FROM delivery.quarantine WHERE invoice_id = %s",
                            (invoice_id,)).fetchone()
    assert released["released_at"] is not None
    assert released["released_run_id"] == "later-run"
    status = conn.execute("SELECT status FROM delivery.document WHERE invoice_id = %s", (invoice_id,)).fetchone()
    assert status["status"] == "extracted"  # passed validation: routing picks it up next
