"""Validate extracted invoices with Great Expectations and quarantine those that fail."""

from invoice_delivery.validation.run import ValidationOutcome, validate_batch

__all__ = ["ValidationOutcome", "validate_batch"]
