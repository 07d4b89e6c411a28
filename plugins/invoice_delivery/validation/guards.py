"""Run-level guards of validation that need neither pandas nor Great Expectations.

The quality gate task imports this module alone, so it does not pay for importing GX (about
1.5 s per task process on the benchmark machine).
"""

from __future__ import annotations


class BatchGuardError(RuntimeError):
    """Raised when a batch-level guard stops the run before anything is sent."""


def check_quarantine_rate(outcomes: list[dict[str, int]], max_rate: float) -> None:
    """Stop the run when more than ``max_rate`` of the validated invoices were quarantined."""
    if not 0 <= max_rate <= 1:
        raise ValueError(f"max_quarantine_rate must be between 0 and 1, got {max_rate}")
    validated = sum(o["validated"] for o in outcomes)
    quarantined = sum(o["quarantined"] for o in outcomes)
    if validated and quarantined / validated > max_rate:
        raise BatchGuardError(
            f"threshold guard: {quarantined} of {validated} invoices quarantined ({quarantined / validated:.1%}), "
            f"above the limit of {max_rate:.0%}; nothing was sent. Inspect the reasons with `invoice-delivery "
            f"validation BATCH_ID`, fix the source, then re-run; the quarantined invoices are released when corrected"
        )
