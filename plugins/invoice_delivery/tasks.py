"""The bodies of the DAGs' tasks: Airflow context in, ledger work through the domain modules, ids out.

DAG files import this module inside their task functions, so parsing a DAG file imports none of
pandas, Great Expectations or the database drivers. Each function returns ids or counts only:
XCom never carries invoices or personal data.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from invoice_delivery import db
from invoice_delivery.channels import CONN_IDS, ENABLED_CHANNELS, GatewayConfig
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger

log = project_logger(__name__)


def _window(context: dict[str, Any], default_span: timedelta) -> tuple[Any, Any]:
    """Return the run's data interval; a manual run without one covers the span up to its run_after."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        end = context["dag_run"].run_after
        start = end - default_span
    return start, end


def extract(context: dict[str, Any], default_span: timedelta) -> list[int]:
    from invoice_delivery.extract import extract_window

    start, end = _window(context, default_span)
    with db.connect(db.airflow_target()) as conn:
        return extract_window(conn, RunContext.from_airflow(context), start, end,
                              batch_size=int(context["params"]["batch_size"]))


def validate(context: dict[str, Any], batch_id: int) -> dict[str, int]:
    from airflow.sdk.exceptions import AirflowFailException

    from invoice_delivery.validation import BatchGuardError, validate_batch

    try:
        with db.connect(db.airflow_target()) as conn:
            outcome = validate_batch(conn, RunContext.from_airflow(context), batch_id)
    except BatchGuardError as exc:
        raise AirflowFailException(str(exc)) from exc  # a retry would hit the same guard
    return {"batch_id": batch_id, "validated": outcome.validated, "passed": outcome.passed,
            "quarantined": outcome.quarantined}


def quality_gate(context: dict[str, Any], outcomes: list[dict[str, int]]) -> list[int]:
    """Stop the run before anything is sent when too many invoices were quarantined."""
    from airflow.sdk.exceptions import AirflowFailException

    from invoice_delivery.validation import BatchGuardError, check_quarantine_rate

    outcomes = list(outcomes)
    try:
        check_quarantine_rate(outcomes, float(context["params"]["max_quarantine_rate"]))
    except BatchGuardError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("Quality gate passed: %d invoices validated, %d quarantined",
             sum(o["validated"] for o in outcomes), sum(o["quarantined"] for o in outcomes))
    return [o["batch_id"] for o in outcomes]


_CLIENT_CLASSES = {
    "sms": "invoice_delivery.channels.sms:SmsClient",
    "mailbox": "invoice_delivery.channels.mailbox:MailboxClient",
    "push": "invoice_delivery.channels.push:PushClient",
    "email": "invoice_delivery.channels.email:EmailClient",
    "einvoice": "invoice_delivery.channels.einvoice:EinvoiceClient",
    "paper": "invoice_delivery.channels.paper:PaperClient",
}


def client_for(channel: str) -> Any:
    """Build the channel's client from its Airflow connection (``<channel>_gateway``)."""
    import importlib

    module_name, class_name = _CLIENT_CLASSES[channel].split(":")
    client_class = getattr(importlib.import_module(module_name), class_name)
    return client_class(GatewayConfig.from_conn_id(CONN_IDS[channel]))


def _mailbox_client():
    return client_for("mailbox")


def route(context: dict[str, Any], batch_id: int) -> int:
    from invoice_delivery.routing import route_batch

    matcher = None
    if "mailbox" in ENABLED_CHANNELS:
        client = _mailbox_client()

        def matcher(numbers: list[str]) -> set[str]:
            return asyncio.run(client.match(numbers))

    with db.connect(db.airflow_target()) as conn:
        route_batch(conn, RunContext.from_airflow(context), batch_id, enabled=ENABLED_CHANNELS,
                    mailbox_matcher=matcher)
    return batch_id


def render(context: dict[str, Any], batch_id: int) -> int:
    from invoice_delivery.rendering import render_batch

    with db.connect(db.airflow_target()) as conn:
        render_batch(conn, RunContext.from_airflow(context), batch_id)
    return batch_id


def send(context: dict[str, Any], batch_id: int) -> dict[str, int]:
    from invoice_delivery.send import send_batch

    clients = {channel: client_for(channel) for channel in ENABLED_CHANNELS}
    with db.connect(db.airflow_target()) as conn:
        counts = send_batch(conn, RunContext.from_airflow(context), batch_id, clients)
    return {"batch_id": batch_id, **counts}


def _status_clients() -> dict[str, Any]:
    """Return a status client for each enabled channel whose gateway is polled."""
    from invoice_delivery.reconcile.poll import POLLED_CHANNELS

    clients = {}
    for channel in POLLED_CHANNELS:
        if channel in ENABLED_CHANNELS:
            clients[channel] = client_for(channel)
    return clients


def poll_statuses(context: dict[str, Any]) -> dict[str, int]:
    from invoice_delivery.reconcile.poll import poll_statuses as poll

    with db.connect(db.airflow_target()) as conn:
        return poll(conn, _status_clients())


def apply_receipts(context: dict[str, Any]) -> dict[str, int]:
    from invoice_delivery.reconcile.apply import apply_receipts as apply

    with db.connect(db.airflow_target()) as conn:
        return apply(conn, RunContext.from_airflow(context))


def expire_overdue(context: dict[str, Any]) -> dict[str, int]:
    from invoice_delivery.reconcile.apply import expire_overdue as expire

    with db.connect(db.airflow_target()) as conn:
        return expire(conn, RunContext.from_airflow(context))
