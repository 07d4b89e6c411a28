"""Move an invoice to the next channel of its plan after a delivery failed or expired."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext


def plan_next_attempts(conn: psycopg.Connection, ctx: RunContext, failed: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Create the next planned attempt for each failed delivery, or fail the invoice at the chain's end.

    ``failed`` rows carry ``invoice_id``, ``delivery_id`` and ``reason``. The new attempt gets a
    new idempotency key, so the gateway treats it as a new message.
    """
    if not failed:
        return {"next_attempts": 0, "failed_final": 0}
    reasons = {row["invoice_id"]: row.get("reason") for row in failed}
    documents = conn.execute(
        "SELECT doc.invoice_id, doc.plan, doc.plan_position,"
        " (SELECT max(attempt) FROM delivery.delivery d WHERE d.invoice_id = doc.invoice_id) AS last_attempt"
        " FROM delivery.document doc WHERE doc.invoice_id = ANY(%s) FOR UPDATE",
        (list(reasons),),
    ).fetchall()
    next_rows, final = [], {}
    for doc in documents:
        channels = (doc["plan"] or {}).get("channels", [])
        position = (doc["plan_position"] or 0) + 1
        if position < len(channels):
            channel = channels[position]["channel"]
            attempt = (doc["last_attempt"] or 0) + 1
            next_rows.append((doc["invoice_id"], channel, attempt, position,
                              ledger.idempotency_key(doc["invoice_id"], channel, attempt), ctx.run_id))
        else:
            tried = ", ".join(c["channel"] for c in channels) or "none"
            final[doc["invoice_id"]] = f"every planned channel failed ({tried}); last: {reasons[doc['invoice_id']]}"
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key,"
            " created_run_id) VALUES (%s, %s, %s, %s, 'planned', %s, %s)"
            " ON CONFLICT (invoice_id, channel, attempt) DO NOTHING",
            next_rows,
        )
        cur.executemany(
            "UPDATE delivery.document SET plan_position = %s, status = 'in_progress', updated_at = now()"
            " WHERE invoice_id = %s",
            [(row[3], row[0]) for row in next_rows],
        )
    ledger.record_events(
        conn, ctx, "fallback_planned",
        ({"invoice_id": row[0], "channel": row[1], "to_state": "planned",
          "details": {"attempt": row[2], "plan_position": row[3]}, "reason": reasons[row[0]]} for row in next_rows),
    )
    ledger.set_document_status(conn, ctx, list(final), "failed", reasons=final)
    return {"next_attempts": len(next_rows), "failed_final": len(final)}
