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
from airflow.sdk import DeltaDataIntervalTimetable, Param, dag, task, task_group

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

    @task
    def validate(batch_id: int, **context) -> dict[str, int]:
        from invoice_delivery import tasks

        return tasks.validate(context, batch_id)

    @task
    def quality_gate(outcomes: list[dict[str, int]], **context) -> list[int]:
        from invoice_delivery import tasks

        return tasks.quality_gate(context, outcomes)

    @task_group
    def process(batch_id: int):
        @task
        def route(batch_id: int, **context) -> int:
            from invoice_delivery import tasks

            return tasks.route(context, batch_id)

        @task
        def render(batch_id: int, **context) -> int:
            from invoice_delivery import tasks

            return tasks.render(context, batch_id)

        @task
        def send(batch_id: int, **context) -> dict[str, int]:
            from invoice_delivery import tasks

            return tasks.send(context, batch_id)

        send(render(route(batch_id)))

    validated = validate.expand(batch_id=extract())
    process.expand(batch_id=quality_gate(validated))


invoice_delivery()
