"""Poll the gateways that offer only status queries (mailbox, e-invoice, print) for accepted messages.

Each final answer is stored as a receipt (``payload.source = "poll"``) with the id
``poll:<message id>:<status>``, so it flows through the same matching as webhook receipts and a
repeated poll with the same answer is stored once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import psycopg

from invoice_delivery.masking import project_logger

log = project_logger(__name__)

POLLED_CHANNELS = ("mailbox", "einvoice", "paper")
POLL_LIMIT = 5_000


class StatusClient(Protocol):
    async def status(self, message_ids: list[str]) -> dict[str, tuple[str, str | None]]: ...


def poll_statuses(conn: psycopg.Connection, clients: dict[str, StatusClient]) -> dict[str, int]:
    """Ask each polled gateway about its accepted deliveries; store final answers as receipts."""
    stored = 0
    asked = 0
    for channel in POLLED_CHANNELS:
        client = clients.get(channel)
        if client is None:
            continue
        rows = conn.execute(
            "SELECT gateway_message_id, idempotency_key FROM delivery.delivery"
            " WHERE channel = %s AND state = 'accepted' AND gateway_message_id IS NOT NULL"
            " ORDER BY accepted_at LIMIT %s",
            (channel, POLL_LIMIT),
        ).fetchall()
        if not rows:
            continue
        asked += len(rows)
        answers = asyncio.run(client.status([r["gateway_message_id"] for r in rows]))
        receipts: list[tuple[Any, ...]] = []
        for row in rows:
            status, detail = answers.get(row["gateway_message_id"], ("pending", None))
            if status not in ("delivered", "failed"):
                continue
            payload = {"source": "poll", "message_id": row["gateway_message_id"], "status": status,
                       "gateway_status": status, "detail": detail, "reference": row["idempotency_key"]}
            receipts.append((channel, f"poll:{row['gateway_message_id']}:{status}", row["gateway_message_id"],
                             row["idempotency_key"], status, status, json.dumps(payload)))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO delivery.receipt (channel, webhook_id, gateway_message_id, reference, status,"
                " gateway_status, payload) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
                " ON CONFLICT (channel, webhook_id) DO NOTHING",
                receipts,
            )
        stored += len(receipts)
    log.info("Polled %d accepted deliveries; %d final statuses stored as receipts", asked, stored)
    return {"polled": asked, "stored": stored}
