"""Decide each invoice's channel plan from a rule table: first choice, fallback chain, and why.

The plan is an ordered list of channels. It is built from:

1. document type: a business with a Peppol participant id gets e-invoice first;
2. the customer's own preference order;
3. every other reachable, consented channel, cheapest first (cost is the tie-breaker);
4. paper last, as the last resort, when a postal address exists.

A channel enters the plan only if it is enabled, the customer consented (where the channel needs
consent) and the customer is reachable on it. Every channel left out gets a reason too, so
``invoice-delivery show`` can say why an invoice went where it went.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger

log = project_logger(__name__)

MAILBOX_MATCH_TTL = timedelta(days=7)


@dataclass(frozen=True)
class ChannelRule:
    """When a channel can carry an invoice, and what one message costs (relative units)."""

    channel: str
    needs_consent: bool
    reachable: Callable[[dict[str, Any]], str | None]  # None when reachable, else the reason not
    cost: int


def _sms_reachable(row: dict[str, Any]) -> str | None:
    if not row["mobile"]:
        return "no mobile number"
    try:
        number = phonenumbers.parse(row["mobile"], row["customer_country"] or "SE")
    except phonenumbers.NumberParseException:
        return "mobile number cannot be parsed"
    if not phonenumbers.is_valid_number(number):
        return "mobile number is not valid"
    return None


def _mailbox_reachable(row: dict[str, Any]) -> str | None:
    if row["kind"] != "person" or not row["personal_number"]:
        return "no personal identity number"
    if not row.get("has_mailbox"):
        return "no digital mailbox accepting this sender"
    return None


def _push_reachable(row: dict[str, Any]) -> str | None:
    return None if row["push_token"] else "no app installation token"


def _email_reachable(row: dict[str, Any]) -> str | None:
    return None if row["email"] else "no e-mail address"


def _einvoice_reachable(row: dict[str, Any]) -> str | None:
    return None if row["peppol_id"] else "no Peppol participant id"


def _paper_reachable(row: dict[str, Any]) -> str | None:
    return None if row["street"] and row["postal_code"] and row["city"] else "no complete postal address"


RULES: dict[str, ChannelRule] = {
    rule.channel: rule
    for rule in (
        ChannelRule("einvoice", needs_consent=False, reachable=_einvoice_reachable, cost=1),
        ChannelRule("mailbox", needs_consent=True, reachable=_mailbox_reachable, cost=0),
        ChannelRule("push", needs_consent=True, reachable=_push_reachable, cost=0),
        ChannelRule("email", needs_consent=True, reachable=_email_reachable, cost=0),
        ChannelRule("sms", needs_consent=True, reachable=_sms_reachable, cost=3),
        ChannelRule("paper", needs_consent=False, reachable=_paper_reachable, cost=10),
    )
}


# Every channel but paper, cheapest first: the order after the customer's own preferences.
_BY_COST = tuple(name for _, name in sorted((rule.cost, name) for name, rule in RULES.items() if name != "paper"))


def purpose_of(row: dict[str, Any]) -> str:
    """Credit notes and zero or negative amounts inform; only a positive invoice demands payment."""
    if row["document_type"] == "credit_note" or row["payable"] is None or row["payable"] <= 0:
        return "informational"
    return "payment_demand"


def plan_for(row: dict[str, Any], enabled: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Return (plan, skipped): the ordered channels with reasons, and the channels left out with reasons."""
    order: list[tuple[str, str]] = []
    if row["kind"] == "business" and row["peppol_id"]:
        order.append(("einvoice", "business with a Peppol participant id: e-invoice first"))
    for rank, channel in enumerate(row["channel_preferences"] or [], start=1):
        order.append((channel, f"customer preference #{rank}"))
    order.extend((name, "reachable and consented; cheaper channels first") for name in _BY_COST)
    order.append(("paper", "last resort: postal address on file"))

    plan, skipped, seen = [], [], set()
    for channel, why in order:
        if channel in seen:
            continue
        seen.add(channel)
        rule = RULES.get(channel)
        if rule is None:
            skipped.append({"channel": channel, "reason": f"unknown channel {channel!r} in preferences"})
            continue
        if channel not in enabled:
            skipped.append({"channel": channel, "reason": "channel not enabled in this deployment"})
            continue
        if rule.needs_consent and channel not in (row["consents"] or []):
            skipped.append({"channel": channel, "reason": "no consent"})
            continue
        unreachable = rule.reachable(row)
        if unreachable:
            skipped.append({"channel": channel, "reason": unreachable})
            continue
        if channel == "paper" and plan and channel not in (row["channel_preferences"] or []):
            why = "last resort after the channels above"
        plan.append({"channel": channel, "reason": why})
    return plan, skipped


_ROUTE_SQL = """
SELECT i.invoice_id, i.document_type, i.payable, c.kind, c.personal_number, c.peppol_id, c.mobile, c.email,
       c.push_token, c.street, c.postal_code, c.city, c.country AS customer_country, c.channel_preferences,
       c.consents
FROM delivery.batch_item bi
JOIN delivery.document d ON d.invoice_id = bi.invoice_id AND d.status = 'extracted'
JOIN billing.invoice i ON i.invoice_id = bi.invoice_id
JOIN billing.customer c ON c.customer_id = i.customer_id
WHERE bi.batch_id = %s
ORDER BY i.invoice_id
"""


def route_batch(
    conn: psycopg.Connection,
    ctx: RunContext,
    batch_id: int,
    *,
    enabled: tuple[str, ...],
    mailbox_matcher: Callable[[list[str]], set[str]] | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Plan every validated invoice of the batch and create its first delivery attempt."""
    rows = conn.execute(_ROUTE_SQL, (batch_id,)).fetchall()
    if not rows:
        return {"routed": 0, "unroutable": 0}
    now = now or datetime.now(UTC)
    if "mailbox" in enabled and mailbox_matcher is not None:
        _attach_mailbox_matches(conn, rows, mailbox_matcher, now)

    routed, unroutable = [], {}
    for row in rows:
        plan, skipped = plan_for(row, enabled)
        row["purpose"], row["plan"], row["skipped"] = purpose_of(row), plan, skipped
        if plan:
            routed.append(row)
        else:
            unroutable[row["invoice_id"]] = "no usable channel: " + "; ".join(
                f"{s['channel']}: {s['reason']}" for s in skipped)

    changed = _store_routes(conn, ctx, batch_id, rows, unroutable)
    ledger.record_events(
        conn, ctx, "document_status_changed",
        ({"invoice_id": c["invoice_id"], "to_state": c["status"], "reason": c["reason"]} for c in changed),
    )
    ledger.record_events(
        conn, ctx, "routed",
        ({"invoice_id": r["invoice_id"], "channel": r["plan"][0]["channel"] if r["plan"] else None,
          "details": {"purpose": r["purpose"], "plan": r["plan"], "skipped": r["skipped"]}} for r in rows),
    )
    log.info("Batch %s routed: %d planned, %d unroutable", batch_id, len(routed), len(unroutable))
    if unroutable:
        log.info("Batch %s unroutable invoice ids: %s", batch_id, sorted(unroutable))
    return {"routed": len(routed), "unroutable": len(unroutable)}


_ROUTES_TABLE = """
CREATE TEMPORARY TABLE routes (
    invoice_id bigint PRIMARY KEY, plan jsonb NOT NULL, purpose text NOT NULL, status text NOT NULL,
    reason text, channel text, idempotency_key text
) ON COMMIT DROP
"""

# One statement stores every plan, moves each document to routed or unroutable and creates the
# first attempts of the routed ones. Documents no longer 'extracted' (taken by another run) are
# left alone and get no attempt.
_STORE_ROUTES_SQL = """
WITH updated AS (
    UPDATE delivery.document d
    SET plan = r.plan, purpose = r.purpose, plan_position = 0, status = r.status, reason = r.reason,
        last_run_id = %(run_id)s, updated_at = now()
    FROM routes r
    WHERE d.invoice_id = r.invoice_id AND d.status = 'extracted'
    RETURNING d.invoice_id, d.status, d.reason
), attempts AS (
    INSERT INTO delivery.delivery (invoice_id, channel, attempt, plan_position, state, idempotency_key, batch_id,
                                   created_run_id)
    SELECT r.invoice_id, r.channel, 1, 0, 'planned', r.idempotency_key, %(batch_id)s, %(run_id)s
    FROM routes r JOIN updated u ON u.invoice_id = r.invoice_id
    WHERE u.status = 'routed'
    ON CONFLICT (invoice_id, channel, attempt) DO NOTHING
)
SELECT invoice_id, status, reason FROM updated ORDER BY invoice_id
"""


def _store_routes(
    conn: psycopg.Connection, ctx: RunContext, batch_id: int, rows: list[dict], unroutable: dict[int, str]
) -> list[dict]:
    """Store the plans and first attempts through a temporary table; return the documents whose status changed."""
    conn.execute(_ROUTES_TABLE)
    with conn.cursor() as cur, cur.copy(
        "COPY routes (invoice_id, plan, purpose, status, reason, channel, idempotency_key) FROM STDIN"
    ) as copy:
        for row in rows:
            invoice_id = row["invoice_id"]
            plan = json.dumps({"channels": row["plan"], "skipped": row["skipped"]})
            if row["plan"]:
                channel = row["plan"][0]["channel"]
                key = ledger.idempotency_key(invoice_id, channel, 1)
                copy.write_row((invoice_id, plan, row["purpose"], "routed", None, channel, key))
            else:
                copy.write_row((invoice_id, plan, row["purpose"], "unroutable", unroutable[invoice_id], None, None))
    changed = conn.execute(_STORE_ROUTES_SQL, {"run_id": ctx.run_id, "batch_id": batch_id}).fetchall()
    conn.execute("DROP TABLE routes")
    return changed


def _attach_mailbox_matches(
    conn: psycopg.Connection, rows: list[dict], matcher: Callable[[list[str]], set[str]], now: datetime
) -> None:
    """Set ``has_mailbox`` on each row from the cache, asking the gateway only for stale or new numbers."""
    numbers = sorted({r["personal_number"] for r in rows if r["kind"] == "person" and r["personal_number"]})
    cached = {
        r["personal_number"]: r["has_mailbox"]
        for r in conn.execute(
            "SELECT personal_number, has_mailbox FROM delivery.mailbox_match"
            " WHERE personal_number = ANY(%s) AND checked_at > %s",
            (numbers, now - MAILBOX_MATCH_TTL),
        )
    }
    unknown = [n for n in numbers if n not in cached]
    if unknown:
        matched = matcher(unknown)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO delivery.mailbox_match (personal_number, has_mailbox, checked_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (personal_number) DO UPDATE SET has_mailbox = EXCLUDED.has_mailbox,"
                " checked_at = EXCLUDED.checked_at",
                [(n, n in matched, now) for n in unknown],
            )
        cached.update({n: n in matched for n in unknown})
    for row in rows:
        row["has_mailbox"] = cached.get(row["personal_number"], False)
