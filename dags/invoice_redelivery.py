"""
### Invoice redelivery

Re-drives invoices that did not reach their customer, for operators. Trigger it from the UI with
the form: the window of `ready_at` dates, the channels and states to include, and a reason.

- **Dry run** (the default) lists what would be re-driven, in the task log and the audit trail,
  and changes nothing.
- A real run re-drives: failed invoices get a new attempt on their plan's first channel (a new
  idempotency key), quarantined ones are validated again, unroutable ones are routed again; then
  the same validate → route → render → send tasks as `invoice_delivery` run. Delivered invoices
  are never sent again.

The reason and the user who triggered the run are written to the audit trail of every invoice.
For whole past windows, `airflow backfill create --dag-id invoice_delivery ...` does the same.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from invoice_delivery.pipeline_tasks import deliver_batches

CHANNELS = ["mailbox", "sms", "push", "email", "einvoice", "paper"]
STATES = ["failed", "quarantined", "unroutable"]


@dag(
    dag_id="invoice_redelivery",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Stockholm"),
    catchup=False,
    tags=["invoices", "delivery", "operations"],
    doc_md=__doc__,
    default_args={
        "owner": "invoice-delivery",
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
    },
    params={
        "from_date": Param(type="string", format="date", title="From date",
                           description="First day (inclusive) of the invoices' ready date, YYYY-MM-DD."),
        "to_date": Param(type="string", format="date", title="To date",
                         description="Last day (inclusive) of the invoices' ready date, YYYY-MM-DD."),
        "channels": Param([], type="array", items={"type": "string", "enum": CHANNELS}, title="Channels",
                          description="Only invoices whose last attempt used one of these; empty means all."),
        "states": Param(["failed"], type="array", items={"type": "string", "enum": STATES}, minItems=1,
                        title="States", description="Which invoices to re-drive."),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="List what would be re-driven without changing anything."),
        "reason": Param(type="string", minLength=5, maxLength=500, title="Reason",
                        description="Why these invoices are re-driven; written to the audit trail."),
        "max_quarantine_rate": Param(0.2, type="number", minimum=0, maximum=1, title="Maximum quarantine rate",
                                     description="Stop before sending when a larger share fails validation."),
        "batch_size": Param(5000, type="integer", minimum=1, maximum=100000, title="Batch size",
                            description="Invoices per mapped task instance."),
    },
)
def invoice_redelivery():
    @task
    def plan_redelivery(**context) -> list[int]:
        from invoice_delivery import tasks

        return tasks.plan_redelivery(context)

    deliver_batches(plan_redelivery())


invoice_redelivery()
