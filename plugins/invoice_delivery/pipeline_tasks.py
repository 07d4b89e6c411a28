"""Task wiring shared by the DAGs that deliver batches: validate, gate, then route, render, send.

Imported by DAG files at parse time, so it imports nothing but the Task SDK; each task imports
:mod:`invoice_delivery.tasks` when it runs.
"""

from __future__ import annotations

from airflow.sdk import XComArg, task, task_group


@task
def validate(batch_id: int, **context) -> dict[str, int]:
    from invoice_delivery import tasks

    return tasks.validate(context, batch_id)


@task
def quality_gate(outcomes: list[dict[str, int]], **context) -> list[int]:
    from invoice_delivery import tasks

    return tasks.quality_gate(context, outcomes)


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


@task_group
def process(batch_id: int):
    """Route, render and send one batch; mapped over the run's batch ids."""
    send(render(route(batch_id)))


def deliver_batches(batch_ids: XComArg) -> None:
    """Validate every batch, stop the run if the gate trips, then process each batch."""
    validated = validate.expand(batch_id=batch_ids)
    process.expand(batch_id=quality_gate(validated))
