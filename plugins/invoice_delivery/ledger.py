"""Move deliveries and documents through their states, writing one audit event per change.

Every state change of the ledger goes through this module, set-based (one statement per batch,
not per row), and each change is written to ``delivery.audit_event`` in the same transaction.

Delivery states::

    planned -> rendered -> sending -> accepted -> delivered
                              |          +-----> failed | expired -> next channel (new attempt)
                              +--> failed (rejected by the gateway)

A final state (delivered, failed, expired, cancelled) never changes again: every transition below
names the states it may leave, so a late or repeated update matches no row.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from invoice_delivery.context import RunContext

FINAL_DELIVERY_STATES = ("delivered", "failed", "expired", "cancelled")
FINAL_DOCUMENT_STATUSES = ("delivered", "failed", "cancelled", "quarantined", "unroutable")
_KEY_NAMESPACE = uuid.UUID("6f1c8a3e-4d7b-5e2a-9c1f-0b7e3d2a6c55")


def idempotency_key(invoice_id: int, channel: str, attempt: int) -> str:
    """Derive the key every gateway call carries; equal inputs give the same key in any process."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{invoice_id}:{channel}:{attempt}"))


@dataclass(frozen=True)
class Change:
    """One row's transition, with the fields to set alongside the new state."""

    delivery_id: int
    fields: dict[str, Any]
    details: dict[str, Any] | None = None


def record_events(
    conn: psycopg.Connection,
    ctx: RunContext,
    event_type: str,
    rows: Iterable[dict[str, Any]],
) -> int:
    """Append audit events; each row may carry invoice_id, delivery_id, channel, from/to state, details.

    The rows are streamed into one COPY, so a generator of a million rows is never held in memory.
    """
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return 0
    count = 0
    # COPY writes a batch's events in one round trip; executemany sent one INSERT per event.
    with conn.cursor() as cur, cur.copy(
        "COPY delivery.audit_event (event_type, invoice_id, delivery_id, channel, from_state, to_state, details,"
        " dag_id, run_id, task_id, try_number, actor, reason) FROM STDIN"
    ) as copy:
        for row in itertools.chain((first,), rows):
            copy.write_row((
                event_type,
                row.get("invoice_id"),
                row.get("delivery_id"),
                row.get("channel"),
                row.get("from_state"),
                row.get("to_state"),
                json.dumps(row.get("details") or {}, default=str),
                ctx.dag_id,
                ctx.run_id,
                ctx.task_id,
                ctx.try_number,
                ctx.actor,
                row.get("reason") or ctx.reason,
            ))
            count += 1
    return count


_SETTABLE = {
    "reason", "gateway_message_id", "content_hash", "not_before", "expires_at",
    "sent_run_id", "claimed_at", "accepted_at", "final_at",
}


def transition(
    conn: psycopg.Connection,
    ctx: RunContext,
    changes: Sequence[Change],
    *,
    from_states: Sequence[str],
    to_state: str,
) -> list[dict[str, Any]]:
    """Move deliveries from any of ``from_states`` to ``to_state``; return the rows that moved.

    Rows no longer in one of ``from_states`` (changed by another worker, or final) are left alone
    and are missing from the result.
    """
    if not changes:
        return []
    field_names = sorted({name for change in changes for name in change.fields})
    unknown = set(field_names) - _SETTABLE
    if unknown:
        raise ValueError(f"cannot set {sorted(unknown)} through a transition; settable: {sorted(_SETTABLE)}")
    columns = ["delivery_id", *field_names]
    final_at = "now()" if to_state in FINAL_DELIVERY_STATES and "final_at" not in field_names else "d.final_at"
    assignments = ", ".join(f"{name} = COALESCE(v.{name}, d.{name})" for name in field_names)
    column_types = {"delivery_id": "bigint", "not_before": "timestamptz", "expires_at": "timestamptz",
                    "claimed_at": "timestamptz", "accepted_at": "timestamptz", "final_at": "timestamptz"}
    # One array per column, so the statement has the same few parameters for any number of rows
    # (PostgreSQL allows 65,535 parameters per statement).
    arrays = [[change.delivery_id for change in changes]]
    arrays += [[change.fields.get(name) for change in changes] for name in field_names]
    unnest = ", ".join(f"%s::{column_types.get(name, 'text')}[]" for name in columns)
    sql = (
        "WITH old AS (SELECT delivery_id, state FROM delivery.delivery"
        " WHERE delivery_id = ANY(%s) AND state = ANY(%s) FOR UPDATE)"
        f" UPDATE delivery.delivery d SET state = %s, updated_at = now(), final_at = {final_at}"
        f"{', ' + assignments if assignments else ''}"
        f" FROM unnest({unnest}) AS v({', '.join(columns)}), old"
        " WHERE d.delivery_id = v.delivery_id AND old.delivery_id = d.delivery_id"
        " RETURNING d.delivery_id, d.invoice_id, d.channel, d.attempt, d.reason, d.gateway_message_id,"
        " old.state AS from_state"
    )
    ids = [change.delivery_id for change in changes]
    moved = conn.execute(sql, [ids, list(from_states), to_state, *arrays]).fetchall()
    details = {change.delivery_id: change.details for change in changes}
    record_events(
        conn,
        ctx,
        "delivery_state_changed",
        (
            {
                "invoice_id": row["invoice_id"],
                "delivery_id": row["delivery_id"],
                "channel": row["channel"],
                "from_state": row["from_state"],
                "to_state": to_state,
                "reason": row["reason"] if to_state in ("failed", "expired", "cancelled") else None,
                "details": details.get(row["delivery_id"]),
            }
            for row in moved
        ),
    )
    return moved


def set_document_status(
    conn: psycopg.Connection,
    ctx: RunContext,
    invoice_ids: Sequence[int],
    status: str,
    *,
    reasons: dict[int, str] | None = None,
    from_statuses: Sequence[str] | None = None,
) -> list[int]:
    """Set the status of documents (optionally only from ``from_statuses``); return the ids changed."""
    if not invoice_ids:
        return []
    reasons = reasons or {}
    ids = list(invoice_ids)
    rows = conn.execute(
        "UPDATE delivery.document d SET status = %s, reason = r.reason, last_run_id = %s, updated_at = now()"
        " FROM (SELECT unnest(%s::bigint[]) AS invoice_id, unnest(%s::text[]) AS reason) r"
        " WHERE d.invoice_id = r.invoice_id AND (%s::text[] IS NULL OR d.status = ANY(%s::text[]))"
        " AND d.status IS DISTINCT FROM %s"
        " RETURNING d.invoice_id",
        (status, ctx.run_id, ids, [reasons.get(i) for i in ids],
         list(from_statuses) if from_statuses else None, list(from_statuses) if from_statuses else None, status),
    ).fetchall()
    changed = [row["invoice_id"] for row in rows]
    record_events(
        conn,
        ctx,
        "document_status_changed",
        ({"invoice_id": i, "to_state": status, "reason": reasons.get(i)} for i in changed),
    )
    return changed
