from invoice_delivery.reconcile.apply import apply_receipts, expire_overdue
from tests.reconcile.conftest import CTX, add_receipt


def _delivery(conn, delivery_id):
    return conn.execute("SELECT * FROM delivery.delivery WHERE delivery_id = %s", (delivery_id,)).fetchone()


def _outcomes(conn):
    return [r["outcome"] for r in conn.execute("SELECT outcome FROM delivery.receipt_outcome ORDER BY receipt_id")]


def test_delivered_receipt_applied(conn, make_delivery):
    d = make_delivery("accepted")
    add_receipt(conn, "sms", "w1", {}, message_id="msg-1")

    counts = apply_receipts(conn, CTX)

    assert counts["delivered"] == 1
    assert _delivery(conn, d["delivery_id"])["state"] == "delivered"
    doc = conn.execute("SELECT status FROM delivery.document WHERE invoice_id = %s", (d["invoice_id"],)).fetchone()
    assert doc["status"] == "delivered"


def test_duplicate_changes_nothing(conn, make_delivery):
    d = make_delivery("accepted")
    add_receipt(conn, "sms", "w1", {}, message_id="msg-1")
    add_receipt(conn, "sms", "w2", {}, message_id="msg-1")

    apply_receipts(conn, CTX)

    assert _delivery(conn, d["delivery_id"])["state"] == "delivered"
    assert _outcomes(conn) == ["applied", "duplicate"]


def test_failed_after_delivered_is_anomaly(conn, make_delivery):
    d = make_delivery("accepted")
    add_receipt(conn, "sms", "w1", {}, message_id="msg-1", status="delivered")
    apply_receipts(conn, CTX)
    add_receipt(conn, "sms", "w2", {}, message_id="msg-1", status="failed")

    counts = apply_receipts(conn, CTX)

    assert counts["anomalies"] == 1
    assert _delivery(conn, d["delivery_id"])["state"] == "delivered"
    events = conn.execute("SELECT * FROM delivery.audit_event WHERE event_type = 'receipt_anomaly'").fetchall()
    assert len(events) == 1
    assert events[0]["delivery_id"] == d["delivery_id"]


def test_receipt_before_send_committed_waits(conn, make_delivery):
    d = make_delivery("sending", message_id=None)
    add_receipt(conn, "sms", "w1", {}, reference=d["idempotency_key"])

    first = apply_receipts(conn, CTX)
    conn.execute("UPDATE delivery.delivery SET state = 'accepted', gateway_message_id = 'msg-9'"
                 " WHERE delivery_id = %s", (d["delivery_id"],))
    second = apply_receipts(conn, CTX)

    assert first["waiting"] == 1
    assert second["delivered"] == 1
    assert _delivery(conn, d["delivery_id"])["state"] == "delivered"


def test_unknown_message_matched_later(conn, make_delivery):
    add_receipt(conn, "sms", "w1", {}, message_id="msg-late")

    first = apply_receipts(conn, CTX)
    d = make_delivery("accepted", message_id="msg-late")
    second = apply_receipts(conn, CTX)

    assert first["waiting"] == 1
    assert conn.execute("SELECT count(*) AS n FROM delivery.receipt").fetchone()["n"] == 1
    assert second["delivered"] == 1
    assert _delivery(conn, d["delivery_id"])["state"] == "delivered"


def test_failed_receipt_plans_next_channel(conn, make_delivery):
    d = make_delivery("accepted")
    add_receipt(conn, "sms", "w1", {}, message_id="msg-1", status="failed")

    apply_receipts(conn, CTX)

    attempts = conn.execute("SELECT channel, attempt, state FROM delivery.delivery WHERE invoice_id = %s"
                            " ORDER BY attempt", (d["invoice_id"],)).fetchall()
    assert attempts == [{"channel": "sms", "attempt": 1, "state": "failed"},
                        {"channel": "mailbox", "attempt": 2, "state": "planned"}]


def test_expiry_falls_back_then_fails_at_chain_end(conn, make_delivery):
    d = make_delivery("accepted", plan=("sms",))
    conn.execute("UPDATE delivery.delivery SET expires_at = now() - interval '1 second' WHERE delivery_id = %s",
                 (d["delivery_id"],))

    counts = expire_overdue(conn, CTX)

    assert counts["expired"] == 1
    assert counts["failed_final"] == 1
    doc = conn.execute("SELECT status, reason FROM delivery.document WHERE invoice_id = %s",
                       (d["invoice_id"],)).fetchone()
    assert doc["status"] == "failed"
    assert "every planned channel failed" in doc["reason"]
