"""Fixtures for rendering tests: generated invoices with planned deliveries in a real database."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.ingest import generator
from invoice_delivery.rendering.render import _DELIVERIES_SQL, _attach_invoice_details

READY_FROM = datetime(2026, 3, 1, tzinfo=UTC)
READY_UNTIL = datetime(2026, 3, 2, tzinfo=UTC)
# 10:00 in Stockholm and Helsinki alike: outside quiet hours everywhere the customers live.
DAYTIME = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def ctx() -> RunContext:
    return RunContext(dag_id="invoice_delivery", run_id="test-run", task_id="render")


def generate_invoices(conn, n: int, seed: int = 3) -> dict[str, list[int]]:
    """Generate ``n`` invoices; return their ids by kind: ``payment``, ``credit_note``, ``zero``."""
    generator.generate(conn, n, seed=seed, ready_from=READY_FROM, ready_until=READY_UNTIL)
    kinds: dict[str, list[int]] = {"payment": [], "credit_note": [], "zero": []}
    for row in conn.execute("SELECT invoice_id, document_type, payable FROM billing.invoice ORDER BY invoice_id"):
        if row["document_type"] == "credit_note":
            kinds["credit_note"].append(row["invoice_id"])
        elif row["payable"] > 0:
            kinds["payment"].append(row["invoice_id"])
        else:
            kinds["zero"].append(row["invoice_id"])
    return kinds


def plan(conn, ctx: RunContext, deliveries: Iterable[tuple[int, str]]) -> int:
    """Put (invoice id, channel) pairs into a new batch as planned deliveries; return the batch id."""
    deliveries = list(deliveries)
    invoice_ids = sorted({invoice_id for invoice_id, _ in deliveries})
    conn.execute(
        "INSERT INTO delivery.document (invoice_id, status, purpose, first_run_id, last_run_id)"
        " SELECT i.invoice_id, 'routed',"
        "  CASE WHEN i.document_type = 'invoice' AND i.payable > 0 THEN 'payment_demand' ELSE 'informational' END,"
        "  %(run)s, %(run)s FROM billing.invoice i WHERE i.invoice_id = ANY(%(ids)s)"
        " ON CONFLICT (invoice_id) DO NOTHING",
        {"run": ctx.run_id, "ids": invoice_ids},
    )
    batch_id = conn.execute(
        "INSERT INTO delivery.batch (dag_id, run_id, interval_start, interval_end, size)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING batch_id",
        (ctx.dag_id, ctx.run_id, READY_FROM, READY_UNTIL, len(invoice_ids)),
    ).fetchone()["batch_id"]
    conn.execute(
        "INSERT INTO delivery.batch_item (batch_id, invoice_id) SELECT %s, unnest(%s::bigint[])",
        (batch_id, invoice_ids),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key,"
            " batch_id, created_run_id) VALUES (%s, %s, 1, 0, 'planned', %s, %s, %s)",
            [(invoice_id, channel, ledger.idempotency_key(invoice_id, channel, 1), batch_id, ctx.run_id)
             for invoice_id, channel in deliveries],
        )
    return batch_id


def delivery_rows(conn, batch_id: int) -> list[dict]:
    """Return the batch's planned deliveries as the rows the renderer takes, lines and VAT included."""
    rows = conn.execute(_DELIVERIES_SQL, (batch_id,)).fetchall()
    _attach_invoice_details(conn, rows)
    return rows


def set_customer(conn, invoice_id: int, **fields) -> None:
    """Update the customer of an invoice, e.g. ``locale="fi"`` or ``name="Öberg & Söner <AB>"``."""
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    conn.execute(
        f"UPDATE billing.customer SET {assignments}"
        " WHERE customer_id = (SELECT customer_id FROM billing.invoice WHERE invoice_id = %(invoice_id)s)",
        {**fields, "invoice_id": invoice_id},
    )


def messages(conn, batch_id: int) -> dict[int, dict]:
    """Return the stored message and delivery state of each delivery in the batch, by invoice id."""
    rows = conn.execute(
        "SELECT d.invoice_id, d.channel, d.state, d.reason, d.content_hash, d.not_before, m.content_type,"
        " m.subject, m.body, m.segments FROM delivery.delivery d"
        " LEFT JOIN delivery.message m USING (delivery_id) WHERE d.batch_id = %s",
        (batch_id,),
    ).fetchall()
    return {row["invoice_id"]: row for row in rows}


def make_row(channel: str = "sms", locale: str = "sv", **overrides) -> dict:
    """Return one renderer row built in memory: a Swedish payment demand of 1 234,50 kr, one line."""
    row = {
        "delivery_id": 1, "invoice_id": 42, "channel": channel, "idempotency_key": "key-42",
        "purpose": "payment_demand", "invoice_number": "10000042", "document_type": "invoice", "type_code": "380",
        "issue_date": date(2026, 3, 1), "due_date": date(2026, 3, 31), "currency": "SEK",
        "line_net_total": Decimal("987.60"), "net_total": Decimal("987.60"), "vat_total": Decimal("246.90"),
        "gross_total": Decimal("1234.50"), "prepaid": Decimal("0.00"), "rounding": Decimal("0.00"),
        "payable": Decimal("1234.50"), "ocr_reference": "100000424", "payment_account": "5381-0420",
        "buyer_reference": None, "seller_name": "Nordlys Energi AB", "seller_country": "SE",
        "seller_org_number": "559183-7405", "seller_vat_number": "SE559183740501",
        "seller_peppol_id": "0007:5591837405", "bankgiro": "5381-0420", "plusgiro": None, "iban": None,
        "seller_street": "Kraftverksvägen 7", "seller_postal_code": "903 27", "seller_city": "Umeå",
        "customer_id": "C42", "customer_name": "Anna Andersson", "kind": "person", "locale": locale,
        "time_zone": "Europe/Stockholm", "personal_number": "198001011234", "customer_org_number": None,
        "customer_vat_number": None, "customer_peppol_id": "0007:5567890123", "email": "anna@example.com",
        "push_token": "token-42", "street": "Storgatan 1", "postal_code": "111 22", "city": "Stockholm",
        "customer_country": "SE",
        "lines": [{"line_no": 1, "line_id": "1", "description": "Elhandel, rörligt pris",
                   "quantity": Decimal("800"), "unit_code": "KWH", "unit_price": Decimal("1.2345"),
                   "net_amount": Decimal("987.60"), "vat_category": "S", "vat_rate": Decimal("25.00")}],
        "vat_breakdown": [{"vat_category": "S", "vat_rate": Decimal("25.00"), "taxable_amount": Decimal("987.60"),
                           "tax_amount": Decimal("246.90")}],
    }  # fmt: skip
    row.update(overrides)
    return row
