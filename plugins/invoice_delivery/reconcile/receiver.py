"""Receive signed receipt webhooks: verify, store raw, acknowledge. Processing happens in the DAG.

One route per channel, ``POST /receipts/{channel}``. Airflow serves this app from the project's
plugin without authentication, so every request authenticates itself (Standard Webhooks):
HMAC-SHA256 over ``id.timestamp.body`` with the gateway's secret, a five-minute window, a
constant-time comparison, and the ``webhook-id`` as replay key (unique per channel in
``delivery.receipt``). Responses: 202 stored, 401 bad signature or stale timestamp, 409 replay,
400 unreadable body (stored anyway, so nothing is lost), 404 unknown channel, 503 no secret
configured. Every rejection is written to the audit trail.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from invoice_delivery import settings, webhooks
from invoice_delivery.reconcile.normalise import NORMALISERS, ReceiptFormatError, normalise

log = logging.getLogger(__name__)

RECEIPT_CHANNELS = tuple(sorted(NORMALISERS))
SecretLookup = Callable[[str], str | None]


def _audit(conn: psycopg.Connection, event_type: str, channel: str, reason: str, details: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO delivery.audit_event (event_type, channel, reason, details, dag_id, task_id, actor)"
        " VALUES (%s, %s, %s, %s::jsonb, 'receipt_webhook', %s, 'gateway')",
        (event_type, channel, reason, json.dumps(details), f"receipts/{channel}"),
    )


def _store(conn: psycopg.Connection, channel: str, webhook_id: str, payload: Any, parsed) -> int | None:
    row = conn.execute(
        "INSERT INTO delivery.receipt (channel, webhook_id, gateway_message_id, reference, status, gateway_status,"
        " payload) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
        " ON CONFLICT (channel, webhook_id) DO NOTHING RETURNING receipt_id",
        (channel, webhook_id, parsed.gateway_message_id if parsed else None, parsed.reference if parsed else None,
         parsed.status if parsed else "invalid", parsed.gateway_status if parsed else None, json.dumps(payload)),
    ).fetchone()
    return row[0] if row else None


def create_receiver_app(secret_for: SecretLookup, target: Callable[[], settings.PostgresTarget]) -> FastAPI:
    """Build the receiver; ``secret_for(channel)`` returns the gateway's webhook secret or None."""
    app = FastAPI(title="Invoice delivery receipt webhooks", docs_url=None, redoc_url=None)

    @app.post("/receipts/{channel}")
    async def receive(channel: str, request: Request) -> JSONResponse:
        if channel not in RECEIPT_CHANNELS:
            return JSONResponse({"error": f"unknown channel {channel!r}; expected one of {list(RECEIPT_CHANNELS)}"},
                                status_code=404)
        body = await request.body()
        secret = secret_for(channel)
        if not secret:
            log.error("Receipt for %s rejected: no webhook secret configured for the gateway", channel)
            return JSONResponse({"error": "receiver not configured for this channel"}, status_code=503)
        webhook_id = request.headers.get("webhook-id", "")
        with psycopg.connect(target().conninfo(), autocommit=True) as conn:
            try:
                webhooks.verify(secret, request.headers, body)
            except webhooks.WebhookVerificationError as exc:
                log.warning("Receipt for %s rejected: %s", channel, exc)
                _audit(conn, "receipt_rejected", channel, str(exc), {"webhook_id": webhook_id[:100]})
                return JSONResponse({"error": str(exc)}, status_code=401)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {"unparsed_body": body.decode("utf-8", "replace")[:10000]}
            try:
                parsed = normalise(channel, payload) if isinstance(payload, dict) else None
                error = None if parsed else "receipt body is not a JSON object"
            except ReceiptFormatError as exc:
                parsed, error = None, str(exc)
            receipt_id = _store(conn, channel, webhook_id, payload, parsed)
            if receipt_id is None:
                _audit(conn, "receipt_replayed", channel, "webhook-id seen before", {"webhook_id": webhook_id})
                return JSONResponse({"error": f"receipt {webhook_id} was already received"}, status_code=409)
            if error:
                _audit(conn, "receipt_invalid", channel, error, {"receipt_id": receipt_id})
                return JSONResponse({"error": error, "receipt_id": receipt_id}, status_code=400)
        return JSONResponse({"receipt_id": receipt_id}, status_code=202)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def secrets_from_env(env: dict[str, str]) -> SecretLookup:
    """Return a lookup reading ``webhook_secret`` from ``AIRFLOW_CONN_<CHANNEL>_GATEWAY`` JSON values in ``env``."""

    def lookup(channel: str) -> str | None:
        raw = env.get(f"AIRFLOW_CONN_{channel.upper()}_GATEWAY", "")
        if not raw.strip().startswith("{"):
            return None
        return (json.loads(raw).get("extra") or {}).get("webhook_secret")

    return lookup


@contextmanager
def serve_in_thread(app: FastAPI, port: int) -> Iterator[str]:
    """Serve ``app`` on ``127.0.0.1:port`` in a background thread; yield its base URL."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="receipt-receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the receipt receiver did not start on 127.0.0.1:{port}; is the port taken?")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def secret_from_connections(channel: str) -> str | None:
    """Return the ``webhook_secret`` extra of the channel gateway's Airflow connection."""
    from invoice_delivery.channels import CONN_IDS

    conn_id = CONN_IDS.get(channel)
    if not conn_id:
        return None
    try:
        from airflow.models.connection import Connection

        extra = Connection.get_connection_from_secrets(conn_id).extra_dejson
    except Exception:  # noqa: BLE001 - outside a full Airflow install, read the env var form
        raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "")
        extra = json.loads(raw).get("extra", {}) if raw.strip().startswith("{") else {}
    return extra.get("webhook_secret")
