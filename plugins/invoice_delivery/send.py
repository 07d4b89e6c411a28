"""Send a batch's rendered messages: claim, call the gateway, record the outcome.

The order is the safety argument:

1. Resolve rows a previous try left in ``sending`` by asking the gateway for their idempotency
   key: found means accepted (record it), not found means never received (send it again with the
   same key, which the gateway deduplicates anyway).
2. Claim rendered rows with ``FOR UPDATE SKIP LOCKED`` and commit them as ``sending`` *before* any
   HTTP call, so a crash after the call leaves a row that step 1 resolves, never a blind resend.
3. Call the gateways, then record accepted and rejected rows in one transaction. Rows whose
   outcome is unknown (gateway down after retries) stay ``sending`` and the task fails, so
   Airflow's retry resolves them through step 1.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import phonenumbers
import psycopg

from invoice_delivery import fallback, ledger
from invoice_delivery.channels import RECEIPT_DEADLINES, SendOutcome, TransientGatewayError
from invoice_delivery.channels.einvoice import EinvoiceMessage
from invoice_delivery.channels.email import EmailMessage
from invoice_delivery.channels.mailbox import MailboxMessage
from invoice_delivery.channels.paper import PaperMessage
from invoice_delivery.channels.push import PushMessage
from invoice_delivery.channels.sms import SmsMessage
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger
from invoice_delivery.quiet_hours import configured_window, next_allowed_time

log = project_logger(__name__)


class ChannelClient(Protocol):
    async def send(self, messages: list[Any]) -> list[SendOutcome]: ...

    async def lookup(self, keys: list[str]) -> dict[str, str | None]: ...


_MESSAGE_SQL = """
SELECT d.delivery_id, d.invoice_id, d.channel, d.idempotency_key, m.body, m.content_type,
       c.name AS customer_name, c.mobile, c.email, c.push_token, c.peppol_id AS receiver_id,
       c.street, c.postal_code, c.city, c.country AS customer_country,
       s.peppol_id AS sender_id, s.org_number AS seller_org_number
FROM delivery.delivery d
JOIN delivery.message m ON m.delivery_id = d.delivery_id
JOIN billing.invoice i ON i.invoice_id = d.invoice_id
JOIN billing.seller s ON s.seller_id = i.seller_id
JOIN billing.customer c ON c.customer_id = i.customer_id
WHERE d.delivery_id = ANY(%s)
ORDER BY d.delivery_id
"""
# Messages loaded and sent together: four SMS requests of 1,000 each, or about 20 MB of mailbox
# documents (a generated invoice's mailbox document measured about 5 KB).
SEND_CHUNK = 4_000
# The envelope sender of invoice e-mail when the email gateway connection sets no ``from_address``.
DEFAULT_MAIL_FROM = "no-reply@invoices.example.com"


def _resolve_unfinished(conn: psycopg.Connection, ctx: RunContext, batch_id: int,
                        clients: dict[str, ChannelClient]) -> list[int]:
    """Settle rows left in ``sending``; return the ids the gateway never received (to send again)."""
    rows = conn.execute(
        "SELECT d.delivery_id, d.channel, d.idempotency_key FROM delivery.delivery d"
        " JOIN delivery.batch_item bi ON bi.invoice_id = d.invoice_id"
        " WHERE bi.batch_id = %s AND d.state = 'sending' FOR UPDATE OF d SKIP LOCKED",
        (batch_id,),
    ).fetchall()
    if not rows:
        return []
    by_channel: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_channel[row["channel"]].append(row)
    found: list[SendOutcome] = []
    resend: list[int] = []
    for channel, items in by_channel.items():
        answers = asyncio.run(clients[channel].lookup([r["idempotency_key"] for r in items]))
        for item in items:
            message_id = answers.get(item["idempotency_key"])
            if message_id:
                found.append(SendOutcome(item["delivery_id"], True, message_id=message_id))
            else:
                resend.append(item["delivery_id"])
    _record(conn, ctx, found, receipt_deadlines(clients))
    log.info("Batch %s: %d unfinished sends resolved by lookup (%d found at the gateway, %d to send again)",
             batch_id, len(rows), len(found), len(resend))
    return resend


QUIET_CHANNELS = ("sms", "push")


def _defer_quiet(conn: psycopg.Connection, batch_id: int, now: datetime) -> int:
    """Hold back SMS and push messages whose recipient entered quiet hours since rendering."""
    window = configured_window()
    if window is None:
        return 0
    rows = conn.execute(
        "SELECT d.delivery_id, c.time_zone FROM delivery.delivery d"
        " JOIN delivery.batch_item bi ON bi.invoice_id = d.invoice_id"
        " JOIN billing.invoice i ON i.invoice_id = d.invoice_id JOIN billing.customer c USING (customer_id)"
        " WHERE bi.batch_id = %s AND d.state = 'rendered' AND d.channel = ANY(%s)"
        " AND (d.not_before IS NULL OR d.not_before <= %s)",
        (batch_id, list(QUIET_CHANNELS), now),
    ).fetchall()
    deferred = []
    for row in rows:
        allowed = next_allowed_time(now, row["time_zone"] or "Europe/Stockholm", *window)
        if allowed > now:
            deferred.append((allowed, row["delivery_id"]))
    with conn.cursor() as cur:
        cur.executemany("UPDATE delivery.delivery SET not_before = %s, updated_at = now() WHERE delivery_id = %s",
                        deferred)
    if deferred:
        log.info("Batch %s: %d SMS and push messages held until the recipients' quiet hours end",
                 batch_id, len(deferred))
    return len(deferred)


def _claim(conn: psycopg.Connection, ctx: RunContext, batch_id: int) -> list[int]:
    rows = conn.execute(
        "UPDATE delivery.delivery d SET state = 'sending', claimed_at = now(), sent_run_id = %s, updated_at = now()"
        " WHERE d.delivery_id IN ("
        "   SELECT d2.delivery_id FROM delivery.delivery d2"
        "   JOIN delivery.batch_item bi ON bi.invoice_id = d2.invoice_id"
        "   WHERE bi.batch_id = %s AND d2.state = 'rendered' AND (d2.not_before IS NULL OR d2.not_before <= now())"
        "   FOR UPDATE OF d2 SKIP LOCKED)"
        " RETURNING d.delivery_id, d.invoice_id, d.channel",
        (ctx.run_id, batch_id),
    ).fetchall()
    ledger.record_events(
        conn, ctx, "delivery_state_changed",
        ({"invoice_id": r["invoice_id"], "delivery_id": r["delivery_id"], "channel": r["channel"],
          "from_state": "rendered", "to_state": "sending"} for r in rows),
    )
    return [r["delivery_id"] for r in rows]


def _e164(mobile: str, country: str | None) -> str:
    return phonenumbers.format_number(phonenumbers.parse(mobile, country or "SE"), phonenumbers.PhoneNumberFormat.E164)


def _build(row: dict[str, Any], mail_from: str) -> Any:
    """Wrap a rendered message in its channel's envelope: the recipient's address on that channel."""
    channel, delivery_id, key, body = row["channel"], row["delivery_id"], row["idempotency_key"], bytes(row["body"])
    if channel == "sms":
        dcs = "UCS2" if "dcs=UCS2" in row["content_type"] else "GSM"
        return SmsMessage(delivery_id, key, _e164(row["mobile"], row["customer_country"]), body.decode(), dcs)
    if channel == "mailbox":
        return MailboxMessage(delivery_id, key, body)
    if channel == "push":
        return PushMessage(delivery_id, key, row["push_token"], body)
    if channel == "email":
        return EmailMessage(delivery_id, key, mail_from, row["email"], body)
    if channel == "einvoice":
        sender = row["sender_id"] or f"0007:{row['seller_org_number']}"
        return EinvoiceMessage(delivery_id, key, sender, row["receiver_id"], body)
    if channel == "paper":
        address = {"name": row["customer_name"], "street": row["street"], "postal_code": row["postal_code"],
                   "city": row["city"], "country": row["customer_country"] or "SE"}
        return PaperMessage(delivery_id, key, address, body, {"duplex": True, "colour": False, "postage": "B"})
    raise ValueError(f"no sender for channel {channel!r}")


def receipt_deadlines(clients: dict[str, ChannelClient]) -> dict[str, timedelta]:
    """Return each channel's receipt deadline: the connection's ``receipt_deadline_s`` extra, else the default."""
    deadlines = dict(RECEIPT_DEADLINES)
    for channel, client in clients.items():
        configured = getattr(getattr(client, "config", None), "extra", {}).get("receipt_deadline_s")
        if configured is not None:
            deadlines[channel] = timedelta(seconds=float(configured))
    return deadlines


def _record(conn: psycopg.Connection, ctx: RunContext, outcomes: list[SendOutcome],
            deadlines: dict[str, timedelta]) -> dict[str, int]:
    now = datetime.now(UTC)
    channels = {
        r["delivery_id"]: r["channel"]
        for r in conn.execute("SELECT delivery_id, channel FROM delivery.delivery WHERE delivery_id = ANY(%s)",
                              ([o.delivery_id for o in outcomes],))
    }
    accepted = [
        ledger.Change(o.delivery_id, {"gateway_message_id": o.message_id, "accepted_at": now,
                                      "expires_at": now + deadlines[channels[o.delivery_id]]},
                      {"gateway_message_id": o.message_id})
        for o in outcomes if o.accepted
    ]
    rejected = [ledger.Change(o.delivery_id, {"reason": o.reason}) for o in outcomes if not o.accepted and o.reason]
    moved = ledger.transition(conn, ctx, accepted, from_states=["sending"], to_state="accepted")
    ledger.set_document_status(conn, ctx, sorted({r["invoice_id"] for r in moved}), "in_progress",
                               from_statuses=["routed", "in_progress"])
    failed = ledger.transition(conn, ctx, rejected, from_states=["sending"], to_state="failed")
    planned = fallback.plan_next_attempts(conn, ctx, failed)
    return {"accepted": len(moved), "rejected": len(failed), "next_attempts": planned["next_attempts"]}


def _send_chunk(conn: psycopg.Connection, ids: list[int], clients: dict[str, ChannelClient],
                mail_from: str) -> list[SendOutcome]:
    """Load the messages of ``ids`` and send them, every channel at once; return one outcome per message."""
    by_channel: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(_MESSAGE_SQL, (ids,)):
        by_channel[row["channel"]].append(_build(row, mail_from))
    conn.commit()

    async def send_all() -> list[list[SendOutcome]]:
        return await asyncio.gather(*(clients[channel].send(messages) for channel, messages in by_channel.items()))

    return [outcome for per_channel in asyncio.run(send_all()) for outcome in per_channel]


def send_batch(conn: psycopg.Connection, ctx: RunContext, batch_id: int,
               clients: dict[str, ChannelClient], *, chunk_size: int = SEND_CHUNK) -> dict[str, int]:
    """Send the batch's rendered messages, ``chunk_size`` at a time; return counts.

    ``conn`` must not be in autocommit mode.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    resend = _resolve_unfinished(conn, ctx, batch_id, clients)
    _defer_quiet(conn, batch_id, datetime.now(UTC))
    claimed = _claim(conn, ctx, batch_id)
    conn.commit()  # the claim is durable before any HTTP call

    ids = resend + claimed
    if not ids:
        log.info("Batch %s: nothing to send", batch_id)
        return {"accepted": 0, "rejected": 0, "unresolved": 0, "next_attempts": 0}
    email_client = clients.get("email")
    mail_from = getattr(getattr(email_client, "config", None), "extra", {}).get("from_address", DEFAULT_MAIL_FROM)
    counts = {"accepted": 0, "rejected": 0, "next_attempts": 0}
    unresolved = 0
    # Bodies are loaded, sent and recorded a chunk at a time, so the bodies in memory do not grow with
    # the batch and each chunk's outcomes are durable before the next chunk is sent.
    for offset in range(0, len(ids), chunk_size):
        outcomes = _send_chunk(conn, ids[offset : offset + chunk_size], clients, mail_from)
        for name, value in _record(conn, ctx, outcomes, receipt_deadlines(clients)).items():
            counts[name] += value
        conn.commit()
        unresolved += sum(1 for o in outcomes if not o.accepted and not o.reason)

    counts["unresolved"] = unresolved
    log.info("Batch %s sent: %d claimed, %d accepted, %d rejected, %d unresolved",
             batch_id, len(ids), counts["accepted"], counts["rejected"], unresolved)
    if unresolved:
        raise TransientGatewayError(
            f"batch {batch_id}: {unresolved} messages received no response from their gateway; they stay claimed "
            f"and the task's retry resolves them by idempotency key"
        )
    return counts
