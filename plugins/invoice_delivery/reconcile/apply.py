"""Apply stored receipts to deliveries, expire deliveries past their deadline, and fall back.

Rules, in the order receipts arrived (``receipt_id``):

- a receipt matches a delivery by (channel, gateway message id), else by reference (our
  idempotency key, which SMS reports echo as ``refId``);
- a receipt that matches nothing yet, or matches a delivery still in ``sending`` (its send is not
  recorded yet), stays unprocessed and is tried again on the next run: it is never dropped;
- ``delivered`` / ``failed`` / ``expired`` move an ``accepted`` delivery to that final state;
  ``opened`` proves delivery too; ``pending`` changes nothing;
- a receipt for a delivery already in a final state changes nothing: the same outcome again is a
  duplicate; a different one (failed after delivered) is an anomaly, logged and audited.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import psycopg

from invoice_delivery import fallback, ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger

log = project_logger(__name__)

RECEIPT_BATCH = 10_000
_TARGET_STATE = {"delivered": "delivered", "opened": "delivered", "failed": "failed", "expired": "expired"}

_PENDING_RECEIPTS = """
SELECT r.receipt_id, r.channel, r.status, r.gateway_status, r.payload, d.delivery_id, d.invoice_id, d.state
FROM delivery.receipt r
LEFT JOIN LATERAL (
    SELECT d.delivery_id, d.invoice_id, d.state FROM delivery.delivery d
    WHERE d.channel = r.channel
      AND ((r.gateway_message_id IS NOT NULL AND d.gateway_message_id = r.gateway_message_id)
           OR (r.reference IS NOT NULL AND d.idempotency_key = r.reference))
    ORDER BY d.delivery_id LIMIT 1
) d ON true
WHERE NOT EXISTS (SELECT 1 FROM delivery.receipt_outcome o WHERE o.receipt_id = r.receipt_id)
ORDER BY r.receipt_id
LIMIT %s
"""


def _outcome(rows: list[tuple], receipt_id: int, delivery_id: int | None, outcome: str, note: str | None) -> None:
    rows.append((receipt_id, delivery_id, outcome, note))


def apply_receipts(conn: psycopg.Connection, ctx: RunContext) -> dict[str, int]:
    """Apply every unprocessed receipt that can be matched; return counts by outcome."""
    receipts = conn.execute(_PENDING_RECEIPTS, (RECEIPT_BATCH,)).fetchall()
    outcomes: list[tuple] = []
    changes: dict[str, list[ledger.Change]] = defaultdict(list)
    anomalies: list[dict[str, Any]] = []
    waiting = 0
    planned_state: dict[int, str] = {}
    for r in receipts:
        if r["status"] == "invalid":
            _outcome(outcomes, r["receipt_id"], None, "ignored", "receipt body could not be read")
            continue
        if r["delivery_id"] is None or r["state"] in ("planned", "rendered", "sending"):
            waiting += 1  # unknown message or send not recorded yet: try again next run
            continue
        target = _TARGET_STATE.get(r["status"])
        current = planned_state.get(r["delivery_id"], r["state"])
        if target is None:
            _outcome(outcomes, r["receipt_id"], r["delivery_id"], "ignored", f"status {r['status']} changes nothing")
        elif current in ledger.FINAL_DELIVERY_STATES:
            if current == target:
                _outcome(outcomes, r["receipt_id"], r["delivery_id"], "duplicate", f"already {current}")
            else:
                note = f"receipt says {target} but the delivery is already {current}; not applied"
                _outcome(outcomes, r["receipt_id"], r["delivery_id"], "anomaly", note)
                anomalies.append({"invoice_id": r["invoice_id"], "delivery_id": r["delivery_id"],
                                  "channel": r["channel"], "reason": note,
                                  "details": {"receipt_id": r["receipt_id"], "gateway_status": r["gateway_status"]}})
        else:
            planned_state[r["delivery_id"]] = target
            reason = None if target == "delivered" else f"gateway reported {r['status']} ({r['gateway_status']})"
            changes[target].append(ledger.Change(r["delivery_id"], {"reason": reason} if reason else {},
                                                 {"receipt_id": r["receipt_id"]}))
            _outcome(outcomes, r["receipt_id"], r["delivery_id"], "applied", target)

    delivered = ledger.transition(conn, ctx, changes["delivered"], from_states=["accepted"], to_state="delivered")
    ledger.set_document_status(conn, ctx, sorted({d["invoice_id"] for d in delivered}), "delivered",
                               from_statuses=["routed", "in_progress"])
    failed = ledger.transition(conn, ctx, changes["failed"], from_states=["accepted"],
                               to_state="failed")
    expired = ledger.transition(conn, ctx, changes["expired"], from_states=["accepted"], to_state="expired")
    fallback.plan_next_attempts(conn, ctx, failed + expired)
    ledger.record_events(conn, ctx, "receipt_anomaly", anomalies)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.receipt_outcome (receipt_id, delivery_id, outcome, note) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (receipt_id) DO NOTHING",
            outcomes,
        )
    for anomaly in anomalies:
        log.warning("Receipt anomaly on invoice %s delivery %s: %s", anomaly["invoice_id"], anomaly["delivery_id"],
                    anomaly["reason"])
    counts = {"receipts": len(receipts), "delivered": len(delivered), "failed": len(failed), "expired": len(expired),
              "anomalies": len(anomalies), "waiting": waiting}
    log.info("Receipts applied: %s", counts)
    return counts


def expire_overdue(conn: psycopg.Connection, ctx: RunContext) -> dict[str, int]:
    """Expire accepted deliveries past their receipt deadline and plan the next channel for each."""
    rows = conn.execute(
        "SELECT delivery_id FROM delivery.delivery WHERE state = 'accepted' AND expires_at < now()"
        " ORDER BY delivery_id FOR UPDATE SKIP LOCKED"
    ).fetchall()
    changes = [ledger.Change(r["delivery_id"], {"reason": "no final receipt before the channel's deadline"})
               for r in rows]
    expired = ledger.transition(conn, ctx, changes, from_states=["accepted"], to_state="expired")
    planned = fallback.plan_next_attempts(conn, ctx, expired)
    if expired:
        log.info("Expired %d deliveries past their deadline (invoice ids %s); %s", len(expired),
                 sorted(r["invoice_id"] for r in expired), planned)
    return {"expired": len(expired), **planned}
