"""
### Invoice delivery

Takes every invoice that became ready in the data interval (and any committed late into a window
that already ran) through the lifecycle: **extract → validate → route → render → send**.

- `extract` registers the invoices in the ledger and cuts them into batches; it returns batch ids.
- `process` is a task group mapped over the batch ids: one mapped instance per batch, never one per
  invoice. Each stage reads and writes the ledger (`delivery` schema); XCom carries ids and counts.
- Failing invoices are quarantined with reasons (`invoice-delivery show INVOICE_NUMBER`);
  unroutable ones are held with the reason.

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

    @task_group
    def process(batch_id: int):
        @task
        def validate(batch_id: int, **context) -> int:
            from invoice_delivery import tasks

            return tasks.validate(context, batch_id)

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

        send(render(route(validate(batch_id))))

    process.expand(batch_id=extract())


invoice_delivery()
