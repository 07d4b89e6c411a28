"""The bodies of the DAGs' tasks: Airflow context in, ledger work through the domain modules, ids out.

DAG files import this module inside their task functions, so parsing a DAG file imports none of
pandas, Great Expectations or the database drivers. Each function returns ids or counts only:
XCom never carries invoices or personal data.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from invoice_delivery import db
from invoice_delivery.channels import CONN_IDS, GatewayConfig, enabled_channels
from invoice_delivery.context import RunContext
from invoice_delivery.masking import mask_text, project_logger

log = project_logger(__name__)


def masked_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Keep personal data out of the task log when a task fails.

    Database and library errors can quote row values (a phone number in a constraint violation).
    When the message contains personal data, the traceback is logged with it masked and a masked
    exception of the same retry class replaces the original.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            message = str(exc)
            masked = mask_text(message)
            if masked == message:
                raise
            log.error("%s failed:\n%s", func.__name__, "".join(traceback.format_exception(exc)))
            from airflow.sdk.exceptions import AirflowFailException

            if isinstance(exc, AirflowFailException):
                raise AirflowFailException(masked) from None
            raise TaskFailedError(f"{type(exc).__name__}: {masked}") from None

    return wrapper


class TaskFailedError(RuntimeError):
    """Raised in place of an error whose message contained personal data; the message is masked."""


def _window(context: dict[str, Any], default_span: timedelta) -> tuple[Any, Any]:
    """Return the run's data interval; a manual run without one covers the span up to its run_after."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        end = context["dag_run"].run_after
        start = end - default_span
    return start, end


def _is_backfill(dag_run: Any) -> bool:
    run_type = dag_run.run_type
    return getattr(run_type, "value", run_type) == "backfill"  # an enum in tasks, a string elsewhere


@masked_errors
def extract(context: dict[str, Any], default_span: timedelta) -> list[int]:
    from invoice_delivery.extract import extract_window

    start, end = _window(context, default_span)
    with db.connect(db.airflow_target()) as conn:
        return extract_window(conn, RunContext.from_airflow(context), start, end,
                              batch_size=int(context["params"]["batch_size"]),
                              redrive=_is_backfill(context["dag_run"]))


@masked_errors
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


@masked_errors
def quality_gate(context: dict[str, Any], outcomes: list[dict[str, int]]) -> list[int]:
    """Stop the run before anything is sent when too many invoices were quarantined."""
    from airflow.sdk.exceptions import AirflowFailException

    from invoice_delivery.validation.guards import BatchGuardError, check_quarantine_rate

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

    from invoice_delivery.channels.ratelimit import SharedRateLimiter

    module_name, class_name = _CLIENT_CLASSES[channel].split(":")
    client_class = getattr(importlib.import_module(module_name), class_name)
    from airflow.sdk.exceptions import AirflowFailException

    try:
        config = GatewayConfig.from_conn_id(CONN_IDS[channel])
        client = client_class(config)
    except ValueError as exc:  # a misconfigured connection: retrying cannot help
        raise AirflowFailException(f"connection {CONN_IDS[channel]!r} cannot be used: {exc}") from exc
    if config.rate_limit_per_s > 0:
        # One budget for every send task on every worker, not one per task.
        client.limiter = SharedRateLimiter(db.airflow_target(), CONN_IDS[channel], config.rate_limit_per_s)
    return client


def _mailbox_client():
    return client_for("mailbox")


@masked_errors
def route(context: dict[str, Any], batch_id: int) -> int:
    from invoice_delivery.routing import route_batch

    matcher = None
    enabled = enabled_channels()
    if "mailbox" in enabled:
        client = _mailbox_client()

        def matcher(numbers: list[str]) -> set[str]:
            return asyncio.run(client.match(numbers))

    with db.connect(db.airflow_target()) as conn:
        route_batch(conn, RunContext.from_airflow(context), batch_id, enabled=enabled,
                    mailbox_matcher=matcher)
    return batch_id


@masked_errors
def render(context: dict[str, Any], batch_id: int) -> int:
    from invoice_delivery.rendering import render_batch

    with db.connect(db.airflow_target()) as conn:
        render_batch(conn, RunContext.from_airflow(context), batch_id)
    return batch_id


@masked_errors
def send(context: dict[str, Any], batch_id: int) -> dict[str, int]:
    from invoice_delivery.channels import ALL_CHANNELS
    from invoice_delivery.rendering import render_batch
    from invoice_delivery.send import send_batch

    clients = {channel: client_for(channel) for channel in enabled_channels()}
    ctx = RunContext.from_airflow(context)
    totals: dict[str, int] = {}
    with db.connect(db.airflow_target()) as conn:
        # A rejection plans the next channel of the invoice's chain; render and send it now rather
        # than a run later. The chain is at most one attempt per channel long.
        for _ in ALL_CHANNELS:
            counts = send_batch(conn, ctx, batch_id, clients)
            totals = {key: totals.get(key, 0) + value for key, value in counts.items()}
            if not counts.get("next_attempts"):
                break
            render_batch(conn, ctx, batch_id)
            conn.commit()
    return {"batch_id": batch_id, **totals}


def _status_clients() -> dict[str, Any]:
    """Return a status client for each enabled channel whose gateway is polled."""
    from invoice_delivery.reconcile.poll import POLLED_CHANNELS

    clients = {}
    for channel in POLLED_CHANNELS:
        if channel in enabled_channels():
            clients[channel] = client_for(channel)
    return clients


@masked_errors
def poll_statuses(context: dict[str, Any]) -> dict[str, int]:
    from invoice_delivery.reconcile.poll import poll_statuses as poll

    with db.connect(db.airflow_target()) as conn:
        return poll(conn, _status_clients())


@masked_errors
def apply_receipts(context: dict[str, Any]) -> dict[str, int]:
    from invoice_delivery.reconcile.apply import apply_receipts as apply

    with db.connect(db.airflow_target()) as conn:
        return apply(conn, RunContext.from_airflow(context))


@masked_errors
def expire_overdue(context: dict[str, Any]) -> dict[str, int]:
    from invoice_delivery.reconcile.apply import expire_overdue as expire

    with db.connect(db.airflow_target()) as conn:
        return expire(conn, RunContext.from_airflow(context))


@masked_errors
def plan_redelivery(context: dict[str, Any]) -> list[int]:
    """Select the invoices the form requests; in a real run, re-drive them and return their batches."""
    from datetime import UTC, date, datetime, time

    from invoice_delivery import redrive
    from invoice_delivery.extract import cut_batches

    params = context["params"]
    first, last = date.fromisoformat(params["from_date"]), date.fromisoformat(params["to_date"])
    if last < first:
        raise ValueError(f"to_date {last} is before from_date {first}; swap them")
    start = datetime.combine(first, time(0), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=UTC)
    dag_run = context["dag_run"]
    actor = getattr(dag_run, "triggering_user_name", None) or "unknown"
    ctx = RunContext.from_airflow(context, actor=actor, reason=params["reason"])
    with db.connect(db.airflow_target()) as conn:
        plan = redrive.select_redrivable(conn, start, end, statuses=params["states"],
                                         channels=params["channels"] or None)
        if params["dry_run"]:
            log.info("Dry run, nothing changed. Would re-drive %d invoices %s: ids %s", len(plan.invoice_ids),
                     plan.counts(), plan.invoice_ids)
            from invoice_delivery import ledger

            ledger.record_events(conn, ctx, "redelivery_dry_run",
                                 [{"details": {"counts": plan.counts(), "from": str(first), "to": str(last),
                                               "channels": params["channels"], "states": params["states"]}}])
            return []
        moved = redrive.apply_redrive(conn, ctx, plan)
        batches = cut_batches(conn, ctx, moved.invoice_ids, start, end, int(params["batch_size"]))
    log.info("Re-driving %d invoices in %d batches: ids %s", len(moved.invoice_ids), len(batches), moved.invoice_ids)
    return batches
