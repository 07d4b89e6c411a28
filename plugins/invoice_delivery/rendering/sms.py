"""Encode SMS text as GSM 03.38 (GSM-7) or UCS-2 and count the parts it is sent in.

GSM-7 carries 160 characters in one part and 153 per part when split; the extension characters
``€ [ ] { } ^ ~ \\ |`` (and form feed) take two positions. Text with any character outside GSM-7
is sent as UCS-2: 70 characters in one part, 67 per part, where a character outside the Basic
Multilingual Plane (most emoji) takes two UTF-16 code units.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

# Typographic characters that have a plain GSM-7 look-alike; replaced before encoding so one curly
# apostrophe does not turn the whole message into UCS-2. Letters such as å, ä, ö are never touched.
LOOKALIKES = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\u202f": " ",
    "\u2009": " ", "\u2007": " ",
})


@dataclass(frozen=True)
class SmsEncoding:
    """How a text goes out: its encoding (``GSM`` or ``UCS2``, as the gateway's ``dcs`` field) and size."""

    text: str
    dcs: str
    units: int
    segments: int


def normalise(text: str) -> str:
    return text.translate(LOOKALIKES)


def encode(text: str) -> SmsEncoding:
    """Normalise look-alikes, pick the encoding and count parts."""
    text = normalise(text)
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        segments = 1 if units <= 160 else -(-units // 153)
        return SmsEncoding(text, "GSM", units, segments)
    units = len(text.encode("utf-16-le")) // 2
    segments = 1 if units <= 70 else -(-units // 67)
    return SmsEncoding(text, "UCS2", units, segments)
