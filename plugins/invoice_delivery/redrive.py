"""Re-drive invoices that did not reach their customer: backfills and operator redelivery.

What a re-drive does per invoice, by where the invoice stands:

- ``failed`` (every channel of the plan failed or expired): a new attempt on the plan's first
  channel, with a new attempt number and so a new idempotency key;
- ``quarantined``: released and validated again;
- ``unroutable``: routed again (consent or contact points may have changed since);
- ``delivered`` or anything still in progress: left alone. A delivered invoice is never sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger

log = project_logger(__name__)

REDRIVABLE = ("failed", "quarantined", "unroutable")


@dataclass
class RedrivePlan:
    """The invoices a re-drive touches, by their status; ids only."""

    failed: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    unroutable: list[int] = field(default_factory=list)

    @property
    def invoice_ids(self) -> list[int]:
        return sorted(self.failed + self.quarantined + self.unroutable)

    def counts(self) -> dict[str, int]:
        return {"failed": len(self.failed), "quarantined": len(self.quarantined), "unroutable": len(self.unroutable)}


def select_redrivable(
    conn: psycopg.Connection,
    ready_from: datetime,
    ready_until: datetime,
    *,
    statuses: Sequence[str] = REDRIVABLE,
    channels: Sequence[str] | None = None,
) -> RedrivePlan:
    """Find invoices ready in [ready_from, ready_until) whose status is one of ``statuses``.

    ``channels`` keeps only invoices whose last attempt used one of them (quarantined and unroutable
    invoices have no attempt and are kept only when ``channels`` is empty).
    """
    unknown = set(statuses) - set(REDRIVABLE)
    if unknown:
        raise ValueError(f"cannot re-drive invoices in status {sorted(unknown)}; choose from {list(REDRIVABLE)}")
    rows = conn.execute(
        "SELECT doc.invoice_id, doc.status,"
        " (SELECT d.channel FROM delivery.delivery d WHERE d.invoice_id = doc.invoice_id"
        "  ORDER BY d.attempt DESC LIMIT 1) AS last_channel"
        " FROM delivery.document doc JOIN billing.invoice i USING (invoice_id)"
        " WHERE i.ready_at >= %s AND i.ready_at < %s AND doc.status = ANY(%s)"
        " ORDER BY doc.invoice_id",
        (ready_from, ready_until, list(statuses)),
    ).fetchall()
    plan = RedrivePlan()
    for row in rows:
        if channels and row["last_channel"] not in channels:
            continue
        getattr(plan, row["status"]).append(row["invoice_id"])
    return plan


def apply_redrive(conn: psycopg.Connection, ctx: RunContext, plan: RedrivePlan) -> RedrivePlan:
    """Put the plan's invoices back to work; return what actually moved (others changed meanwhile)."""
    moved = RedrivePlan()
    if plan.quarantined:
        released = [
            r["invoice_id"]
            for r in conn.execute(
                "UPDATE delivery.quarantine SET released_at = now(), released_run_id = %s"
                " WHERE invoice_id = ANY(%s) AND released_at IS NULL RETURNING invoice_id",
                (ctx.run_id, plan.quarantined),
            )
        ]
        moved.quarantined = ledger.set_document_status(conn, ctx, released, "extracted",
                                                       from_statuses=["quarantined"])
    if plan.unroutable:
        moved.unroutable = ledger.set_document_status(conn, ctx, plan.unroutable, "extracted",
                                                      from_statuses=["unroutable"])
    if plan.failed:
        moved.failed = _new_first_attempts(conn, ctx, plan.failed)
    ledger.record_events(
        conn, ctx, "redelivery",
        ({"invoice_id": i, "to_state": "redriven", "details": {"previous_status": status}}
         for status in ("failed", "quarantined", "unroutable") for i in getattr(moved, status)),
    )
    log.info("Re-driven: %s (asked by %s, reason: %s)", moved.counts(), ctx.actor or ctx.dag_id, ctx.reason)
    return moved


def _new_first_attempts(conn: psycopg.Connection, ctx: RunContext, invoice_ids: list[int]) -> list[int]:
    docs = conn.execute(
        "SELECT doc.invoice_id, doc.plan, (SELECT max(attempt) FROM delivery.delivery d"
        " WHERE d.invoice_id = doc.invoice_id) AS last_attempt"
        " FROM delivery.document doc WHERE doc.invoice_id = ANY(%s) AND doc.status = 'failed' FOR UPDATE",
        (invoice_ids,),
    ).fetchall()
    rows = []
    for doc in docs:
        channels = (doc["plan"] or {}).get("channels") or []
        if not channels:
            continue
        attempt = (doc["last_attempt"] or 0) + 1
        channel = channels[0]["channel"]
        key = ledger.idempotency_key(doc["invoice_id"], channel, attempt)
        rows.append((doc["invoice_id"], channel, attempt, 0, key, ctx.run_id))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key,"
            " created_run_id) VALUES (%s, %s, %s, %s, 'planned', %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )
        cur.executemany(
            "UPDATE delivery.document SET plan_position = 0, updated_at = now() WHERE invoice_id = %s",
            [(row[0],) for row in rows],
        )
    return ledger.set_document_status(conn, ctx, [row[0] for row in rows], "in_progress", from_statuses=["failed"])
