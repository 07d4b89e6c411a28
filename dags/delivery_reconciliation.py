"""
### Delivery reconciliation

Turns "accepted by the gateway" into "delivered" (or failed or expired), every minute:

1. `poll_statuses` asks the gateways that offer only status queries (mailbox, e-invoice, print)
   about accepted messages and stores final answers as receipts.
2. `apply_receipts` matches stored receipts (webhooks and polls) to deliveries and advances them.
   Receipts for unknown messages stay stored and are matched on a later run; duplicates change
   nothing; a contradicting late receipt is audited as an anomaly and not applied.
3. `expire_overdue` expires accepted deliveries with no final receipt before the channel's
   deadline and plans the next channel of the invoice's chain; `invoice_delivery` sends it.

Receipt webhooks arrive at the api-server: `POST /invoice-delivery/receipts/{channel}`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DeltaTriggerTimetable, dag, task


@dag(
    dag_id="delivery_reconciliation",
    schedule=DeltaTriggerTimetable(timedelta(minutes=1)),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Stockholm"),
    catchup=False,
    max_active_runs=1,
    tags=["invoices", "reconciliation"],
    doc_md=__doc__,
    default_args={
        "owner": "invoice-delivery",
        "retries": 3,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=2),
    },
)
def delivery_reconciliation():
    @task
    def poll_statuses(**context) -> dict[str, int]:
        from invoice_delivery import tasks

        return tasks.poll_statuses(context)

    @task
    def apply_receipts(**context) -> dict[str, int]:
        from invoice_delivery import tasks

        return tasks.apply_receipts(context)

    @task
    def expire_overdue(**context) -> dict[str, int]:
        from invoice_delivery import tasks

        return tasks.expire_overdue(context)

    poll_statuses() >> apply_receipts() >> expire_overdue()


delivery_reconciliation()
