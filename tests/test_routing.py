from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from invoice_delivery.context import RunContext
from invoice_delivery.extract import extract_window
from invoice_delivery.ingest.generator import generate
from invoice_delivery.ledger import idempotency_key
from invoice_delivery.routing import plan_for, purpose_of, route_batch

ALL = ("einvoice", "mailbox", "push", "email", "sms", "paper")
ROUTE_CTX = RunContext(dag_id="invoice_delivery", run_id="routing-test", task_id="process.route")


def customer(**overrides):
    row = {
        "kind": "person", "personal_number": "198001011234", "peppol_id": None, "mobile": "+46701740605",
        "email": "a@example.com", "push_token": None, "street": "Storgatan 1", "postal_code": "111 22",
        "city": "Stockholm", "customer_country": "SE", "channel_preferences": ["sms", "mailbox"],
        "consents": ["sms", "mailbox", "email"], "has_mailbox": True, "document_type": "invoice",
        "payable": Decimal("100.00"),
    }
    row.update(overrides)
    return row


def channels(plan):
    return [step["channel"] for step in plan]


def test_preference_order_then_cheapest_then_paper():
    plan, _ = plan_for(customer(), ALL)

    assert channels(plan) == ["sms", "mailbox", "email", "paper"]
    assert plan[0]["reason"] == "customer preference #1"


def test_no_consent_skipped_with_reason():
    plan, skipped = plan_for(customer(consents=["mailbox"]), ALL)

    assert "sms" not in channels(plan)
    assert {"channel": "sms", "reason": "no consent"} in skipped


def test_unreachable_first_choice_falls_to_next():
    plan, skipped = plan_for(customer(mobile=None), ALL)

    assert channels(plan)[0] == "mailbox"
    assert {"channel": "sms", "reason": "no mobile number"} in skipped


def test_business_with_peppol_gets_einvoice_first():
    plan, _ = plan_for(customer(kind="business", personal_number=None, peppol_id="0007:5560000001"), ALL)

    assert channels(plan)[0] == "einvoice"


def test_disabled_channel_left_out():
    plan, skipped = plan_for(customer(), ("sms",))

    assert channels(plan) == ["sms"]
    assert {"channel": "paper", "reason": "channel not enabled in this deployment"} in skipped


def test_nothing_usable_gives_empty_plan():
    plan, skipped = plan_for(customer(consents=[], street=None), ALL)

    assert plan == []
    assert len(skipped) == len(ALL)


@pytest.mark.parametrize(
    ("document_type", "payable", "purpose"),
    [("invoice", Decimal("1.00"), "payment_demand"), ("invoice", Decimal("0.00"), "informational"),
     ("invoice", Decimal("-5.00"), "informational"), ("credit_note", Decimal("50.00"), "informational")],
)
def test_purpose(document_type, payable, purpose):
    assert purpose_of({"document_type": document_type, "payable": payable}) == purpose


def _extracted_batch(conn, count: int) -> int:
    now = datetime.now(UTC)
    generate(conn, count, seed=21, ready_from=now - timedelta(minutes=5), ready_until=now)
    [batch_id] = extract_window(conn, ROUTE_CTX, now - timedelta(minutes=10), now + timedelta(seconds=1),
                                batch_size=count)
    return batch_id


def test_route_batch_stores_plans_and_attempts(conn):
    batch_id = _extracted_batch(conn, 200)
    quarantined_id = conn.execute("SELECT min(invoice_id) AS i FROM delivery.document").fetchone()["i"]
    conn.execute("UPDATE delivery.document SET status = 'quarantined' WHERE invoice_id = %s", (quarantined_id,))

    counts = route_batch(conn, ROUTE_CTX, batch_id, enabled=("sms", "email", "paper"))

    documents = conn.execute("SELECT invoice_id, status, plan, purpose, reason FROM delivery.document"
                             " WHERE invoice_id <> %s", (quarantined_id,)).fetchall()
    routed = [d for d in documents if d["status"] == "routed"]
    unroutable = [d for d in documents if d["status"] == "unroutable"]
    assert counts == {"routed": len(routed), "unroutable": len(unroutable)}
    assert len(routed) + len(unroutable) == 199
    assert all(d["plan"]["channels"] and d["reason"] is None for d in routed)
    assert all(d["reason"].startswith("no usable channel: ") for d in unroutable)
    attempts = conn.execute("SELECT invoice_id, channel, attempt, state, idempotency_key, batch_id"
                            " FROM delivery.delivery ORDER BY invoice_id").fetchall()
    assert [a["invoice_id"] for a in attempts] == sorted(d["invoice_id"] for d in routed)
    by_invoice = {d["invoice_id"]: d for d in routed}
    for attempt in attempts:
        assert attempt["channel"] == by_invoice[attempt["invoice_id"]]["plan"]["channels"][0]["channel"]
        assert attempt["state"] == "planned"
        assert attempt["batch_id"] == batch_id
        assert attempt["idempotency_key"] == idempotency_key(attempt["invoice_id"], attempt["channel"], 1)
    events = conn.execute("SELECT count(*) AS n FROM delivery.audit_event WHERE event_type = 'document_status_changed'"
                          " AND run_id = %s", (ROUTE_CTX.run_id,)).fetchone()
    assert events["n"] == 199
    left = conn.execute("SELECT status, plan FROM delivery.document WHERE invoice_id = %s",
                        (quarantined_id,)).fetchone()
    assert left == {"status": "quarantined", "plan": None}

