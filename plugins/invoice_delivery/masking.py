"""Mask personal data (phone numbers, e-mail addresses, personal identity numbers) for logs and reasons."""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-])[\w.-]*\.([a-z]{2,})\b", re.IGNORECASE)
# Swedish personal identity numbers, with or without century and separator: 19800101-1234, 8001011234.
_PERSONAL_NUMBER = re.compile(r"(?<!\d)(?:19|20)?\d{6}[-+]?\d{4}(?!\d)")
# Phone numbers as people write them: "+", "00" or a trunk "0" first (so dates and amounts are left
# alone), then 7 to 14 more digits with spaces, dashes, dots or "(0)" between.
_PHONE = re.compile(r"(?<![\w+])(?:\+|00|0)\d(?:[\s\-.]?(?:\(0\))?[\s\-.]?\d){6,13}(?!\d)")


def mask_value(value: object) -> str:
    """Mask one known-personal value, keeping only enough to tell values apart: ``+467******05``."""
    text = "" if value is None else str(value)
    if len(text) <= 4:
        return "*" * len(text)
    keep = 2 if len(text) < 10 else 4
    return text[: keep - 1] + "*" * (len(text) - keep) + text[-1:]


def mask_text(text: str) -> str:
    """Mask every e-mail address, personal identity number and phone number found in free text."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}***.{m.group(3)}", text)
    text = _PERSONAL_NUMBER.sub(lambda m: mask_value(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_value(m.group(0)), text)


class PersonalDataFilter(logging.Filter):
    """Mask personal data in a record's rendered message and exception text before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            masked_exc = mask_text(str(exc))
            if masked_exc != str(exc):
                record.exc_text = f"{type(exc).__name__}: {masked_exc}"
                record.exc_info = None
        return True


def project_logger(name: str) -> logging.Logger:
    """Return a logger whose records pass the personal-data filter."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, PersonalDataFilter) for f in logger.filters):
        logger.addFilter(PersonalDataFilter())
    return logger
