"""Read the ledger for people: per-channel state counts and one invoice's path."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import psycopg

DELIVERY_STATES = ("planned", "rendered", "sending", "accepted", "delivered", "failed", "expired", "cancelled")


def status_counts(conn: psycopg.Connection) -> dict[str, Any]:
    """Count each document once: by its latest attempt's channel and state, or by why it has none."""
    channels: dict[str, dict[str, int]] = defaultdict(dict)
    for row in conn.execute(
        "SELECT channel, state, count(*) AS n FROM ("
        "  SELECT DISTINCT ON (invoice_id) invoice_id, channel, state FROM delivery.delivery"
        "  ORDER BY invoice_id, attempt DESC) latest GROUP BY channel, state ORDER BY channel, state"
    ):
        channels[row["channel"]][row["state"]] = row["n"]
    held = {
        row["status"]: row["n"]
        for row in conn.execute(
            "SELECT doc.status, count(*) AS n FROM delivery.document doc"
            " WHERE NOT EXISTS (SELECT 1 FROM delivery.delivery d WHERE d.invoice_id = doc.invoice_id)"
            " GROUP BY doc.status"
        )
    }
    documents = conn.execute("SELECT count(*) AS n FROM delivery.document").fetchone()["n"]
    invoices = conn.execute("SELECT count(*) AS n FROM billing.invoice").fetchone()["n"]
    attempts = conn.execute("SELECT count(*) AS n FROM delivery.delivery").fetchone()["n"]
    by_fallback = conn.execute(
        "SELECT count(*) AS n FROM delivery.delivery WHERE state = 'delivered' AND attempt > 1").fetchone()["n"]
    return {
        "channels": {channel: dict(states) for channel, states in channels.items()},
        "quarantined": held.get("quarantined", 0),
        "unroutable": held.get("unroutable", 0),
        "held_other": {k: v for k, v in held.items() if k not in ("quarantined", "unroutable")},
        "total": documents,
        "invoices_in_source": invoices,
        "delivery_attempts": attempts,
        "delivered_by_fallback": by_fallback,
    }


def format_status(counts: dict[str, Any]) -> str:
    states = [s for s in DELIVERY_STATES if any(s in c for c in counts["channels"].values())] or ["accepted"]
    header = f"{'channel':<10}" + "".join(f"{s:>11}" for s in states) + f"{'total':>9}"
    lines = [header, "-" * len(header)]
    for channel in sorted(counts["channels"]):
        row = counts["channels"][channel]
        lines.append(f"{channel:<10}" + "".join(f"{row.get(s, 0):>11}" for s in states) + f"{sum(row.values()):>9}")
    lines.append("-" * len(header))
    lines.append(f"{'quarantined (validation failed, reasons in `show`)':<60}{counts['quarantined']:>9}")
    lines.append(f"{'unroutable (no usable channel, reasons in `show`)':<60}{counts['unroutable']:>9}")
    for status, n in sorted(counts["held_other"].items()):
        lines.append(f"{'awaiting: ' + status:<60}{n:>9}")
    lines.append(f"{'documents in the ledger':<60}{counts['total']:>9}")
    lines.append(f"{'  of which delivered on a fallback channel':<60}{counts['delivered_by_fallback']:>9}")
    lines.append(f"{'delivery attempts (all channels, all tries)':<60}{counts['delivery_attempts']:>9}")
    lines.append(f"{'invoices in the billing source':<60}{counts['invoices_in_source']:>9}")
    return "\n".join(lines)


def invoice_path(conn: psycopg.Connection, invoice_number: str) -> list[dict[str, Any]]:
    """Return everything the ledger stores about the invoices with this number (one per seller)."""
    invoices = conn.execute(
        "SELECT i.invoice_id, i.invoice_number, i.seller_id, i.document_type, i.currency, i.payable,"
        " i.issue_date, i.due_date, i.ready_at, i.source, i.source_file, doc.status, doc.reason, doc.purpose,"
        " doc.plan, doc.first_run_id, doc.last_run_id"
        " FROM billing.invoice i LEFT JOIN delivery.document doc USING (invoice_id)"
        " WHERE i.invoice_number = %s ORDER BY i.invoice_id",
        (invoice_number,),
    ).fetchall()
    for invoice in invoices:
        invoice_id = invoice["invoice_id"]
        invoice["quarantine"] = conn.execute(
            "SELECT run_id, reasons, quarantined_at, released_at, released_run_id FROM delivery.quarantine"
            " WHERE invoice_id = %s ORDER BY quarantine_id", (invoice_id,)).fetchall()
        invoice["deliveries"] = conn.execute(
            "SELECT delivery_id, attempt, channel, state, reason, gateway_message_id, content_hash,"
            " idempotency_key, created_run_id, sent_run_id, accepted_at, final_at, expires_at"
            " FROM delivery.delivery WHERE invoice_id = %s ORDER BY attempt", (invoice_id,)).fetchall()
        invoice["events"] = conn.execute(
            "SELECT occurred_at, event_type, channel, from_state, to_state, reason, dag_id, run_id, task_id,"
            " try_number, actor FROM delivery.audit_event WHERE invoice_id = %s ORDER BY event_id",
            (invoice_id,)).fetchall()
    return invoices


def format_invoice_path(invoice: dict[str, Any]) -> str:
    lines = [
        f"Invoice {invoice['invoice_number']} (id {invoice['invoice_id']}, seller {invoice['seller_id']}, "
        f"{invoice['document_type']}, {invoice['payable']} {invoice['currency']}, source {invoice['source']}"
        f"{' ' + invoice['source_file'] if invoice['source_file'] else ''})",
        f"  status:  {invoice['status'] or 'not yet extracted'}"
        + (f" - {invoice['reason']}" if invoice["reason"] else ""),
    ]
    if invoice["purpose"]:
        lines.append(f"  purpose: {invoice['purpose'].replace('_', ' ')}")
    plan = invoice["plan"] or {}
    if plan:
        lines.append("  plan:")
        for position, step in enumerate(plan.get("channels", []), start=1):
            lines.append(f"    {position}. {step['channel']:<9} {step['reason']}")
        for step in plan.get("skipped", []):
            lines.append(f"    -  {step['channel']:<9} skipped: {step['reason']}")
    for entry in invoice["quarantine"]:
        released = f", released {entry['released_at']:%Y-%m-%d %H:%M}" if entry["released_at"] else ""
        lines.append(f"  quarantined {entry['quarantined_at']:%Y-%m-%d %H:%M:%S} in {entry['run_id']}{released}:")
        for reason in entry["reasons"]:
            value = f" (value {reason['value']})" if reason.get("value") is not None else ""
            lines.append(f"    - {reason['rule']} on {reason['column']}: {reason['message']}{value}")
    if invoice["deliveries"]:
        lines.append("  deliveries:")
        for d in invoice["deliveries"]:
            lines.append(
                f"    attempt {d['attempt']} {d['channel']:<8} {d['state']:<9}"
                f" message {d['gateway_message_id'] or '-'}  sha256 {(d['content_hash'] or '-')[:16]}"
                + (f"  reason: {d['reason']}" if d["reason"] else "")
            )
    if invoice["events"]:
        lines.append("  trail:")
        for e in invoice["events"]:
            move = f"{e['from_state'] or ''}->{e['to_state']}" if e["to_state"] else ""
            lines.append(
                f"    {e['occurred_at']:%Y-%m-%d %H:%M:%S} {e['event_type']:<24} {e['channel'] or '':<8} {move:<22}"
                f" {e['dag_id']}/{e['task_id']} try {e['try_number']}"
                + (f"  reason: {e['reason']}" if e["reason"] else "")
            )
    return "\n".join(lines)


AUDIT_COLUMNS = ("event_id", "occurred_at", "event_type", "invoice_id", "invoice_number", "delivery_id", "channel",
                 "from_state", "to_state", "reason", "actor", "dag_id", "run_id", "task_id", "try_number", "details")


def audit_events(conn: psycopg.Connection, *, invoice_number: str | None = None, occurred_from=None,
                 occurred_until=None) -> Iterator[dict[str, Any]]:
    """Yield audit events of one invoice number, or of a period [from, until), oldest first."""
    where, params = [], []
    if invoice_number is not None:
        where.append("i.invoice_number = %s")
        params.append(invoice_number)
    if occurred_from is not None:
        where.append("e.occurred_at >= %s")
        params.append(occurred_from)
    if occurred_until is not None:
        where.append("e.occurred_at < %s")
        params.append(occurred_until)
    sql = (
        "SELECT e.event_id, e.occurred_at, e.event_type, e.invoice_id, i.invoice_number, e.delivery_id, e.channel,"
        " e.from_state, e.to_state, e.reason, e.actor, e.dag_id, e.run_id, e.task_id, e.try_number, e.details"
        " FROM delivery.audit_event e LEFT JOIN billing.invoice i USING (invoice_id)"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY e.event_id"
    )
    with conn.cursor(name="audit_export") as cursor:
        cursor.itersize = 5000
        cursor.execute(sql, params)
        yield from cursor


def format_audit_trail(events: list[dict[str, Any]]) -> str:
    lines = []
    for e in events:
        move = f"{e['from_state'] or ''} -> {e['to_state']}" if e["to_state"] else ""
        who = f"{e['dag_id']}/{e['task_id']} try {e['try_number']} run {e['run_id']}"
        if e["actor"]:
            who += f" by {e['actor']}"
        lines.append(f"{e['occurred_at']:%Y-%m-%d %H:%M:%S.%f}  #{e['event_id']:<8} {e['event_type']:<24}"
                     f" {e['channel'] or '-':<8} {move}")
        lines.append(f"    {who}")
        if e["reason"]:
            lines.append(f"    reason: {e['reason']}")
        if e["details"]:
            lines.append(f"    details: {json.dumps(e['details'], sort_keys=True, default=str)}")
    return "\n".join(lines)
