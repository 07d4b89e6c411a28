"""Render one message per planned delivery: text, PDF or structured payload per channel."""

from invoice_delivery.rendering.render import render_batch

__all__ = ["render_batch"]
