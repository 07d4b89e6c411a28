"""Encode payment QR codes and compare them module by module with segno."""

from __future__ import annotations

import json
import random
from datetime import date
from decimal import Decimal

import pytest
import segno

from invoice_delivery.rendering import payment_qr

_ALPHABET = 'abcdefghijklmnopqrstuvwxyz{}":,.0123456789'


def segno_data_codewords(data: bytes, version: int, level: str) -> bytes:
    """Return the data codewords as segno 1.6.6 builds them.

    When the terminator ends on a byte boundary, segno still adds eight zero bits, where
    ISO/IEC 18004 section 7.4.10 adds none. Decoders stop at the terminator, so both read the same.
    """
    standard = payment_qr._data_codewords(data, version, level)
    capacity = payment_qr._capacity(version, level)
    end = (4 + payment_qr._count_bits(version) + 8 * len(data) + 4) // 8
    if end >= capacity:
        return standard
    return standard[:end] + b"\x00" + (b"\xec\x11" * capacity)[: capacity - end - 1]


def _payloads(version: int, level: str, rng: random.Random) -> list[str]:
    longest = payment_qr._capacity(version, level) - (2 if version < 10 else 3)
    return ["".join(rng.choice(_ALPHABET) for _ in range(size)) for size in {longest, longest - 1, longest - 7}]


@pytest.mark.parametrize("level", ["L", "M"])
@pytest.mark.parametrize("version", range(1, 11))
def test_matrix_equals_segno(level, version):
    rng = random.Random(version)
    for mask in range(8):
        for payload in _payloads(version, level, rng):
            data = payload.encode()
            reference = segno.make(payload, error=level, mask=mask, mode="byte", micro=False, boost_error=False)

            ours = payment_qr._matrix(segno_data_codewords(data, version, level), version, level, mask)

            assert payment_qr.smallest_version(data, level) == reference.version == version
            assert ours == [bytes(row) for row in reference.matrix]


def test_data_codewords_follow_iso():
    codewords = payment_qr._data_codewords(b"hello world", 1, "M")

    assert codewords.hex() == "40b68656c6c6f20776f726c640ec11ec"


def test_long_payload_falls_back_to_segno():
    payload = "x" * 300  # beyond version 10 at level M

    matrix = payment_qr.qr_matrix(payload)

    reference = segno.make(payload, error="M", mask=payment_qr.DATA_MASK, mode="byte", micro=False, boost_error=False)
    assert matrix == [bytes(row) for row in reference.matrix]


def test_usingqr_payload_is_ascii_json():
    row = {"seller_name": "Kraftbolaget Övre Norrland AB", "seller_country": "SE", "seller_org_number": "559183-7405",
           "ocr_reference": "100000424", "due_date": date(2026, 3, 31), "payable": Decimal("1234.50"),
           "currency": "SEK", "bankgiro": "5381-0420"}

    payload = payment_qr.usingqr_payload(row)

    assert payload.isascii()
    assert json.loads(payload) == {"uqr": 1, "tp": 1, "nme": "Kraftbolaget Övre Norrland AB", "cc": "SE",
                                   "cid": "559183-7405", "iref": "100000424", "ddt": "20260331", "due": 1234.5,
                                   "cur": "SEK", "pt": "BG", "acc": "5381-0420"}


def test_qr_image_has_quiet_zone():
    image = payment_qr.qr_image("hello world")

    modules = 21 + 2 * payment_qr.QUIET_ZONE
    assert image.width == image.height == modules * payment_qr.MODULE_PIXELS
    assert image.bits == 1
    assert len(image.data) == image.height * modules
    assert image.data[: modules * payment_qr.QUIET_ZONE * payment_qr.MODULE_PIXELS] == b"\xff" * (
        modules * payment_qr.QUIET_ZONE * payment_qr.MODULE_PIXELS)
