"""Format money, numbers and dates exactly as Babel does, per locale."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pytest
from babel.numbers import format_currency, format_decimal

from invoice_delivery.rendering.formatting import (
    BABEL_LOCALES,
    SUPPORTED_LOCALES,
    UnsupportedLocale,
    long_date,
    money,
    number,
    price,
)

EDGE_AMOUNTS = ["0", "-0.00", "0.005", "0.015", "1", "-1", "12.34", "999.995", "1000", "1234.5", "-1234.5",
                "1234567.891", "12345678901.23", "0.0005", "0.0015", "351.0000", "1E+3"]


def _amounts() -> list[Decimal]:
    rng = random.Random(7)
    drawn = [Decimal(rng.randint(-10**9, 10**9)) / Decimal(10 ** rng.randint(0, 4)) for _ in range(400)]
    return [Decimal(text) for text in EDGE_AMOUNTS] + drawn


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("currency", ["SEK", "EUR", "NOK", "DKK", "USD", "JPY"])
def test_money_equals_babel(locale, currency):
    for amount in _amounts():
        assert money(amount, currency, locale) == format_currency(amount, currency, locale=BABEL_LOCALES[locale])


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_number_equals_babel(locale):
    for value in _amounts():
        assert number(value, locale) == format_decimal(value, locale=BABEL_LOCALES[locale])


@pytest.mark.parametrize(
    ("locale", "money_text", "date_text"),
    [
        ("sv", "1\u00a0234,50\u00a0kr", "31 mars 2026"),
        ("en", "SEK1,234.50", "31 March 2026"),
        ("nb", "1\u00a0234,50\u00a0SEK", "31. mars 2026"),
        ("da", "1.234,50\u00a0SEK", "31. marts 2026"),
        ("fi", "1\u00a0234,50\u00a0SEK", "31. maaliskuuta 2026"),
    ],
)
def test_swedish_crowns_per_locale(locale, money_text, date_text):
    assert money(Decimal("1234.50"), "SEK", locale) == money_text
    assert long_date(date(2026, 3, 31), locale) == date_text


def test_unit_price_keeps_four_decimals():
    assert price(Decimal("1.2345"), "sv") == "1,2345"
    assert price(Decimal("49.0000"), "sv") == "49,00"
    assert price(Decimal("0.4500"), "en") == "0.45"


def test_unsupported_locale_rejected():
    with pytest.raises(UnsupportedLocale, match="locale 'de' is not supported; use one of sv, en, nb, da, fi"):
        money(Decimal(1), "SEK", "de")
