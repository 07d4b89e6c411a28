"""Load and render the message templates under ``include/templates/`` with Jinja2.

Templates are named ``<channel>/<document>.<locale>.<kind>.j2``: kind ``txt`` is plain text (not
escaped), ``html`` is escaped. Undefined variables raise, so a template that needs data the
invoice lacks fails that one invoice with a reason instead of sending a broken message. There is
no fallback to another locale: a missing template fails the invoice too.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from invoice_delivery import settings
from invoice_delivery.rendering.formatting import SUPPORTED_LOCALES, country_name, long_date, money, number, price

__all__ = ["SUPPORTED_LOCALES", "build_environment", "template_name", "templates_dir"]


def templates_dir() -> Path:
    return Path(os.environ.get("INVOICE_DELIVERY_TEMPLATES", settings.PROJECT_ROOT / "include" / "templates"))


def build_environment(directory: Path | None = None) -> jinja2.Environment:
    """Build a compile-once environment: escaping by template kind, strict undefined, Babel filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "xml.j2"), default=False),
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["money"] = money
    env.filters["number"] = number
    env.filters["long_date"] = long_date
    env.filters["price"] = price
    env.filters["country_name"] = country_name
    return env


def template_name(channel: str, document: str, locale: str, kind: str) -> str:
    return f"{channel}/{document}.{locale}.{kind}.j2"
