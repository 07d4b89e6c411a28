"""The error that fails one invoice's message with a reason, leaving the rest of the batch alone."""


class RenderError(ValueError):
    """Raised when one invoice's message cannot be rendered; the delivery fails with this reason."""
