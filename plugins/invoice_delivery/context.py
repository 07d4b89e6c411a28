"""The actor behind each ledger change, an Airflow task try or a person, for the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunContext:
    """Identifies the task try (or the manual action) that changes the ledger."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int = 1
    actor: str | None = None
    reason: str | None = None

    @classmethod
    def from_airflow(
        cls, context: dict[str, Any], *, actor: str | None = None, reason: str | None = None
    ) -> RunContext:
        ti = context["ti"]
        return cls(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=int(getattr(ti, "try_number", 1) or 1),
            actor=actor,
            reason=reason,
        )

    @classmethod
    def manual(cls, actor: str, reason: str, *, task_id: str = "cli") -> RunContext:
        return cls(dag_id="manual", run_id=f"manual:{actor}", task_id=task_id, actor=actor, reason=reason)
