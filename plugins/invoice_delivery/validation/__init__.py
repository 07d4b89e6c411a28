"""Validate extracted invoices with Great Expectations and quarantine those that fail.

The names from :mod:`invoice_delivery.validation.run` load on first use, so that importing the
guards does not import pandas and Great Expectations.
"""

from __future__ import annotations

import logging
from typing import Any

from invoice_delivery.validation.guards import BatchGuardError, check_quarantine_rate

# GX logs a few hundred INFO lines about its own API registry when imported, which drowned the
# validate task's log. This package is imported before GX is, so warnings and errors still show.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

__all__ = ["BatchGuardError", "ValidationOutcome", "check_quarantine_rate", "validate_batch"]


def __getattr__(name: str) -> Any:
    if name in ("ValidationOutcome", "validate_batch"):
        from invoice_delivery.validation import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
