"""
### Invoice delivery

Takes every invoice that became ready in the data interval (and any committed late into a window
that already ran) through the lifecycle: **extract → validate → route → render → send**.

- `extract` registers the invoices in the ledger and cuts them into batches; it returns batch ids.
  Corrected quarantined invoices are released and validated again.
- `validate` runs the Great Expectations suite per batch (mapped: one instance per batch, never one
  per invoice). Failing invoices are quarantined with reasons (`invoice-delivery show NUMBER`).
- `quality_gate` stops the run before anything is sent when more than `max_quarantine_rate` of the
  invoices failed; the schema and empty-batch guards stop it inside `validate`.
- `process` is a task group mapped over the batch ids: route, render, send. Each stage reads and
  writes the ledger (`delivery` schema); XCom carries ids and counts only.

Sends are claimed before the HTTP call and carry an idempotency key, so retries, re-runs and
backfills never send a message twice. Connections: `invoice_db`, `sms_gateway`, `mailbox_gateway`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DeltaDataIntervalTimetable, Param, dag, task

from invoice_delivery.pipeline_tasks import deliver_batches

INTERVAL = timedelta(minutes=5)


@dag(
    dag_id="invoice_delivery",
    schedule=DeltaDataIntervalTimetable(INTERVAL),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Stockholm"),
    catchup=False,
    max_active_runs=1,
    tags=["invoices", "delivery"],
    doc_md=__doc__,
    default_args={
        "owner": "invoice-delivery",
        "retries": 3,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
    },
    params={
        "max_quarantine_rate": Param(
            0.2,
            type="number",
            minimum=0,
            maximum=1,
            title="Maximum quarantine rate",
            description="Stop the run before sending when a larger share of the validated invoices fails.",
        ),
        "batch_size": Param(
            5000,
            type="integer",
            minimum=1,
            maximum=100000,
            title="Batch size",
            description="Invoices per mapped task instance. Larger batches mean fewer task instances.",
        ),
    },
)
def invoice_delivery():
    @task
    def extract(**context) -> list[int]:
        from invoice_delivery import tasks

        return tasks.extract(context, INTERVAL)

    deliver_batches(extract())


invoice_delivery()
