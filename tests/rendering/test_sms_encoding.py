import pytest

from invoice_delivery.rendering import sms


@pytest.mark.parametrize(
    ("text", "dcs", "units", "segments"),
    [
        ("Hej Åsa, din faktura på 1 234,50 kr förfaller.", "GSM", 46, 1),
        ("a" * 160, "GSM", 160, 1),
        ("a" * 161, "GSM", 161, 2),
        ("a" * 306, "GSM", 306, 2),
        ("a" * 307, "GSM", 307, 3),
        ("€" * 80, "GSM", 160, 1),
        ("[x]" + "a" * 156, "GSM", 161, 2),
        ("Hej 😀", "UCS2", 6, 1),
        ("ł" * 70, "UCS2", 70, 1),
        ("ł" * 71, "UCS2", 71, 2),
    ],
)
def test_encoding_and_segments(text, dcs, units, segments):
    encoded = sms.encode(text)

    assert encoded.dcs == dcs
    assert encoded.units == units
    assert encoded.segments == segments


def test_lookalikes_replaced_letters_kept():
    encoded = sms.encode("Öberg’s “bill” – 100\u00a0kr")

    assert encoded.text == "Öberg's \"bill\" - 100 kr"
    assert encoded.dcs == "GSM"
