import logging

import pytest

from invoice_delivery.masking import PersonalDataFilter, mask_text


@pytest.mark.parametrize(
    "personal",
    ["+46701740605", "070-174 06 05", "+46 (0)70 174 06 05", "0046701740605", "198001011234",
     "19800101-1234", "anna.berg12@example.com"],
)
def test_personal_data_masked(personal):
    masked = mask_text(f"sent to {personal} today")

    assert personal not in masked
    assert masked.startswith("sent to ")


def test_dates_and_amounts_kept():
    text = "invoice 12345 for 1234.50 due 2026-12-04 10:00"

    assert mask_text(text) == text


def test_filter_masks_arguments(caplog):
    logger = logging.getLogger("test_masking")
    logger.addFilter(PersonalDataFilter())

    with caplog.at_level(logging.INFO, logger="test_masking"):
        logger.info("sms to %s failed", "+46701740605")

    assert "+46701740605" not in caplog.text
    assert "sms to" in caplog.text
