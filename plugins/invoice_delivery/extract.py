"""Take ready invoices into the pipeline and cut them into batches for the mapped tasks.

A run of ``invoice_delivery`` for the data interval [start, end) takes:

- every invoice with ``ready_at < end`` that the pipeline has not seen yet: the window's own
  invoices and any committed late into a window that already ran;
- every invoice it has seen that has work waiting: a fallback attempt planned, a rendered message
  whose quiet hours are over, or a send left unresolved by a crashed worker.

Re-running the task for the same run returns the same batches (the batches of a run are looked up
before new ones are cut), so a retry after a crash loses nothing and duplicates nothing.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import scalar_row

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger

log = project_logger(__name__)

DEFAULT_BATCH_SIZE = 5_000
# A claim (or an extracted but unvalidated invoice) older than this belongs to a run that died or
# was stopped by a guard: a later run takes it over. Younger ones may still be in a live run's hands.
STALE_CLAIM_S = 600


def extract_window(
    conn: psycopg.Connection,
    ctx: RunContext,
    interval_start: datetime,
    interval_end: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    redrive: bool = False,
) -> list[int]:
    """Register the window's invoices and pending work in batches; return this run's batch ids.

    With ``redrive`` (a backfill run), the window's failed, quarantined and unroutable invoices are
    put back to work too (see :mod:`invoice_delivery.redrive`); delivered ones are left alone.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if interval_end < interval_start:
        raise ValueError(f"data interval ends ({interval_end}) before it starts ({interval_start})")

    conn.execute("SELECT pg_advisory_xact_lock(hashtext('invoice_delivery.extract'))")
    existing = [
        row["batch_id"]
        for row in conn.execute(
            "SELECT batch_id FROM delivery.batch WHERE dag_id = %s AND run_id = %s ORDER BY batch_id",
            (ctx.dag_id, ctx.run_id),
        )
    ]

    # Ids are fetched as plain integers: a window can hold a million invoices, and a dict per row
    # would cost hundreds of bytes each in this task's memory.
    ids = conn.cursor(row_factory=scalar_row)
    new_ids = list(
        ids.execute(
            "INSERT INTO delivery.document (invoice_id, status, first_run_id, last_run_id)"
            " SELECT i.invoice_id, 'extracted', %(run)s, %(run)s FROM billing.invoice i"
            " WHERE i.ready_at < %(end)s"
            " AND NOT EXISTS (SELECT 1 FROM delivery.document d WHERE d.invoice_id = i.invoice_id)"
            " ORDER BY i.invoice_id"
            " ON CONFLICT (invoice_id) DO NOTHING RETURNING invoice_id",
            {"run": ctx.run_id, "end": interval_end},
        )
    )
    ledger.record_events(conn, ctx, "extracted", ({"invoice_id": i, "to_state": "extracted"} for i in new_ids))

    released = _release_corrected(conn, ctx, interval_end)
    if redrive and not existing:
        from invoice_delivery import redrive as redrive_module

        moved = redrive_module.apply_redrive(
            conn, ctx, redrive_module.select_redrivable(conn, interval_start, interval_end))
        released += moved.quarantined + moved.unroutable

    pending = list(
        ids.execute(
            "SELECT DISTINCT d.invoice_id FROM delivery.delivery d"
            " WHERE (d.state IN ('planned', 'rendered') AND (d.not_before IS NULL OR d.not_before <= now()))"
            "    OR (d.state = 'sending' AND d.claimed_at < now() - %s * interval '1 second')"
            " UNION SELECT doc.invoice_id FROM delivery.document doc"
            "   WHERE doc.status = 'extracted' AND doc.last_run_id <> %s"
            "   AND doc.updated_at < now() - %s * interval '1 second'"
            " EXCEPT SELECT bi.invoice_id FROM delivery.batch_item bi"
            "   JOIN delivery.batch b USING (batch_id) WHERE b.dag_id = %s AND b.run_id = %s"
            " ORDER BY 1",
            (STALE_CLAIM_S, ctx.run_id, STALE_CLAIM_S, ctx.dag_id, ctx.run_id),
        )
    )

    new_id_set = set(new_ids)
    pending = sorted(set(pending) | set(released))
    work = new_ids + [i for i in pending if i not in new_id_set]
    batch_ids = cut_batches(conn, ctx, work, interval_start, interval_end, batch_size)
    log.info(
        "Extracted window %s to %s: %d new invoices, %d with pending work (%d released from quarantine), "
        "%d new batches, %d batches in all",
        interval_start.isoformat(), interval_end.isoformat(), len(new_ids), len(pending), len(released),
        len(batch_ids), len(existing) + len(batch_ids),
    )
    return existing + batch_ids


def _release_corrected(conn: psycopg.Connection, ctx: RunContext, interval_end: datetime) -> list[int]:
    """Release quarantined invoices that were corrected in the source since; they are validated again."""
    released = [
        row["invoice_id"]
        for row in conn.execute(
            "WITH corrected AS ("
            "  SELECT q.quarantine_id FROM delivery.quarantine q JOIN billing.invoice i USING (invoice_id)"
            "  WHERE q.released_at IS NULL AND i.updated_at > q.quarantined_at AND i.ready_at < %s"
            "  FOR UPDATE OF q SKIP LOCKED)"
            " UPDATE delivery.quarantine q SET released_at = now(), released_run_id = %s"
            " FROM corrected c WHERE q.quarantine_id = c.quarantine_id RETURNING q.invoice_id",
            (interval_end, ctx.run_id),
        )
    ]
    if released:
        ledger.set_document_status(conn, ctx, released, "extracted", from_statuses=["quarantined"])
        ledger.record_events(conn, ctx, "released",
                             ({"invoice_id": i, "from_state": "quarantined", "to_state": "extracted",
                               "reason": "corrected in the source after quarantine"} for i in released))
        log.info("Released %d corrected invoices from quarantine: ids %s", len(released), sorted(released))
    return released


def cut_batches(
    conn: psycopg.Connection,
    ctx: RunContext,
    invoice_ids: list[int],
    interval_start: datetime,
    interval_end: datetime,
    batch_size: int,
) -> list[int]:
    batch_ids = []
    for offset in range(0, len(invoice_ids), batch_size):
        chunk = invoice_ids[offset : offset + batch_size]
        batch_id = conn.execute(
            "INSERT INTO delivery.batch (dag_id, run_id, interval_start, interval_end, size)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING batch_id",
            (ctx.dag_id, ctx.run_id, interval_start, interval_end, len(chunk)),
        ).fetchone()["batch_id"]
        conn.execute(
            "INSERT INTO delivery.batch_item (batch_id, invoice_id) SELECT %s, unnest(%s::bigint[])",
            (batch_id, chunk),
        )
        batch_ids.append(batch_id)
    return batch_ids


def batch_invoice_ids(conn: psycopg.Connection, batch_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT invoice_id FROM delivery.batch_item WHERE batch_id = %s ORDER BY invoice_id", (batch_id,)
    ).fetchall()
    if not rows and not conn.execute("SELECT 1 FROM delivery.batch WHERE batch_id = %s", (batch_id,)).fetchone():
        raise LookupError(f"batch {batch_id} does not exist in delivery.batch; re-run the extract task")
    return [row["invoice_id"] for row in rows]
