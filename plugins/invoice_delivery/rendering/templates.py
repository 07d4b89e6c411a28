"""Load and render the message templates under ``include/templates/`` with Jinja2.

Templates are named ``<channel>/<document>.<locale>.<kind>.j2``: kind ``txt`` is plain text (not
escaped), ``html`` is escaped. Undefined variables raise, so a template that needs data the
invoice lacks fails that one invoice with a reason instead of sending a broken message.
"""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import jinja2
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from invoice_delivery import settings

SUPPORTED_LOCALES = ("sv", "en", "nb", "da", "fi")
_BABEL_LOCALES = {"sv": "sv_SE", "en": "en_GB", "nb": "nb_NO", "da": "da_DK", "fi": "fi_FI"}


def templates_dir() -> Path:
    return Path(os.environ.get("INVOICE_DELIVERY_TEMPLATES", settings.PROJECT_ROOT / "include" / "templates"))


def babel_locale(locale: str) -> str:
    return _BABEL_LOCALES.get(locale, "en_GB")


def money(amount: Decimal, currency: str, locale: str) -> str:
    """Format money per locale: ``1 234,50 kr`` in Swedish, ``SEK 1,234.50`` in English."""
    return format_currency(amount, currency, locale=babel_locale(locale))


def number(value: Decimal, locale: str) -> str:
    return format_decimal(value, locale=babel_locale(locale))


def long_date(value: date, locale: str) -> str:
    return format_date(value, format="long", locale=babel_locale(locale))


def build_environment(directory: Path | None = None) -> jinja2.Environment:
    """Compile-once environment: escaping by template kind, strict undefined, Babel filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "xml.j2"), default=False),
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["number"] = number
    env.filters["long_date"] = long_date
    return env


def template_name(channel: str, document: str, locale: str, kind: str) -> str:
    locale = locale if locale in SUPPORTED_LOCALES else "en"
    return f"{channel}/{document}.{locale}.{kind}.j2"
