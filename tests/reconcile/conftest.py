"""Fixtures for reconciliation: a generated invoice with a delivery in a chosen state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.ingest.generator import generate
from tests.conftest import free_port

CTX = RunContext(dag_id="delivery_reconciliation", run_id="test-run", task_id="apply_receipts")


@pytest.fixture
def make_delivery(conn):
    """Return a factory: create an invoice with a two-channel plan and its first delivery in ``state``."""
    now = datetime.now(UTC)
    generate(conn, 5, seed=5, ready_from=now - timedelta(minutes=5), ready_until=now)
    invoice_ids = iter([r["invoice_id"] for r in conn.execute("SELECT invoice_id FROM billing.invoice ORDER BY 1")])

    def make(state: str, *, channel: str = "sms", message_id: str | None = "msg-1",
             plan: tuple[str, ...] = ("sms", "mailbox")) -> dict:
        invoice_id = next(invoice_ids)
        plan_json = {"channels": [{"channel": c, "reason": "test"} for c in plan], "skipped": []}
        conn.execute(
            "INSERT INTO delivery.document (invoice_id, status, plan, plan_position, purpose, first_run_id,"
            " last_run_id) VALUES (%s, 'in_progress', %s::jsonb, 0, 'payment_demand', 'r', 'r')",
            (invoice_id, json.dumps(plan_json)),
        )
        key = ledger.idempotency_key(invoice_id, channel, 1)
        row = conn.execute(
            "INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key,"
            " gateway_message_id, created_run_id, expires_at) VALUES (%s, %s, 1, 0, %s, %s, %s, 'r', %s)"
            " RETURNING delivery_id, invoice_id, idempotency_key",
            (invoice_id, channel, state, key, message_id, now + timedelta(hours=1)),
        ).fetchone()
        conn.commit()
        return row

    return make


def add_receipt(conn, channel: str, webhook_id: str, payload: dict, *, message_id=None, reference=None,
                status="delivered"):
    conn.execute(
        "INSERT INTO delivery.receipt (channel, webhook_id, gateway_message_id, reference, status, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
        (channel, webhook_id, message_id, reference, status, json.dumps(payload)),
    )
    conn.commit()


@pytest.fixture
def receiver_url(invoice_db) -> Iterator[str]:
    """Serve the receipt receiver on a loopback port with a known secret per channel."""
    from invoice_delivery.reconcile.receiver import create_receiver_app, serve_in_thread

    app = create_receiver_app(lambda channel: f"secret-{channel}", lambda: invoice_db)
    with serve_in_thread(app, free_port()) as url:
        yield url
