"""Validate extracted invoices with Great Expectations and quarantine those that fail."""

from invoice_delivery.validation.run import (
    BatchGuardError,
    ValidationOutcome,
    check_quarantine_rate,
    validate_batch,
)

__all__ = ["BatchGuardError", "ValidationOutcome", "check_quarantine_rate", "validate_batch"]
