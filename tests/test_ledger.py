from datetime import UTC, datetime, timedelta

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.ingest.generator import generate

CTX = RunContext(dag_id="invoice_delivery", run_id="ledger-test", task_id="send")


def test_transition_beyond_parameter_limit(conn):
    now = datetime.now(UTC)
    generate(conn, 17_000, seed=3, ready_from=now - timedelta(minutes=5), ready_until=now)
    rows = conn.execute(
        "INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key,"
        " created_run_id) SELECT invoice_id, 'sms', 1, 0, 'sending', 'key-' || invoice_id, 'r'"
        " FROM billing.invoice RETURNING delivery_id").fetchall()
    changes = [ledger.Change(r["delivery_id"], {"gateway_message_id": f"m{r['delivery_id']}", "accepted_at": now,
                                                "expires_at": now + timedelta(hours=1), "reason": None})
               for r in rows]

    moved = ledger.transition(conn, CTX, changes, from_states=["sending"], to_state="accepted")

    assert len(moved) == 17_000
    counts = conn.execute("SELECT state, count(*) AS n, count(gateway_message_id) AS ids FROM delivery.delivery"
                          " GROUP BY state").fetchall()
    assert counts == [{"state": "accepted", "n": 17_000, "ids": 17_000}]
    events = conn.execute("SELECT count(*) AS n FROM delivery.audit_event WHERE to_state = 'accepted'").fetchone()
    assert events["n"] == 17_000


def test_transition_skips_final_rows(conn):
    now = datetime.now(UTC)
    generate(conn, 2, seed=4, ready_from=now - timedelta(minutes=5), ready_until=now)
    ids = [r["delivery_id"] for r in conn.execute(
        "INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key,"
        " created_run_id) SELECT invoice_id, 'sms', 1, 0, 'delivered', 'k-' || invoice_id, 'r'"
        " FROM billing.invoice RETURNING delivery_id")]

    moved = ledger.transition(conn, CTX, [ledger.Change(i, {"reason": "late"}) for i in ids],
                              from_states=["accepted"], to_state="failed")

    assert moved == []
    states = {r["state"] for r in conn.execute("SELECT state FROM delivery.delivery")}
    assert states == {"delivered"}


def test_record_events_streams_generator(conn):
    ctx = RunContext(dag_id="invoice_delivery", run_id="ledger-test", task_id="extract", actor="ops@example.org",
                     reason="manual check")
    rows = ({"invoice_id": i, "to_state": "extracted", "details": {"tab": "a\tb", "quote": "'\""}}
            for i in range(1, 4))

    written = ledger.record_events(conn, ctx, "extracted", rows)

    assert written == 3
    events = conn.execute("SELECT invoice_id, details, actor, reason, try_number FROM delivery.audit_event"
                          " ORDER BY event_id").fetchall()
    assert [e["invoice_id"] for e in events] == [1, 2, 3]
    assert events[0]["details"] == {"tab": "a\tb", "quote": "'\""}
    assert events[0]["actor"] == "ops@example.org"
    assert events[0]["reason"] == "manual check"


def test_record_events_empty_writes_nothing(conn):
    written = ledger.record_events(conn, CTX, "extracted", iter(()))

    assert written == 0
    assert conn.execute("SELECT count(*) AS n FROM delivery.audit_event").fetchone()["n"] == 0
