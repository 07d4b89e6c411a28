"""Render one message per planned delivery: text, PDF or structured payload per channel."""

from invoice_delivery.rendering.errors import RenderError
from invoice_delivery.rendering.render import RenderedMessage, Renderer, render_batch

__all__ = ["RenderError", "RenderedMessage", "Renderer", "render_batch"]
