"""Constants and request builders shared by the gateway simulator tests and their fixtures."""

from __future__ import annotations

import base64
import socket
from typing import Any

from invoice_delivery.simulator import SimulatorConfig

SMS_AUTH = ("sms-test-user", "sms-test-password")
MAILBOX_CLIENT = ("mailbox-test-client", "mailbox-test-secret")
TENANT = "tenant-test"
SMS_SECRET = "whsec_" + base64.b64encode(b"sms receipts signing key for tests").decode()
RECEIPT_DELAY_S = 0.2
MAILBOX_DELIVERY_DELAY_S = 0.3


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def simulator_config(receipt_url: str | None, **overrides: Any) -> SimulatorConfig:
    """Build the test configuration: test credentials, short delays, fast receipt retries."""
    config: dict[str, Any] = {
        "seed": 7,
        "sms": {
            "username": SMS_AUTH[0],
            "password": SMS_AUTH[1],
            "webhook_secret": SMS_SECRET,
            "receipts": {
                "url": receipt_url,
                "delay_s": RECEIPT_DELAY_S,
                "retry_backoff_s": 0.1,
                "max_attempts": 3,
            },
        },
        "mailbox": {
            "client_id": MAILBOX_CLIENT[0],
            "client_secret": MAILBOX_CLIENT[1],
            "tenant_key": TENANT,
            "delivery_delay_s": MAILBOX_DELIVERY_DELAY_S,
        },
    }
    config.update(overrides)
    return SimulatorConfig.model_validate(config)


def luhn_check_digit(digits: str) -> str:
    """Return the Luhn check digit to append to ``digits``."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


def make_personal_number(serial: int, birth_date: str = "19800101") -> str:
    """Return a valid 12-digit Swedish personal identity number with a correct check digit."""
    body = f"{birth_date}{serial % 1000:03d}"
    return body + luhn_check_digit(body[2:])


def make_ocr(invoice_number: int) -> str:
    """Return an OCR reference: the invoice number followed by its Luhn check digit."""
    digits = str(invoice_number)
    return digits + luhn_check_digit(digits)


PDF_BYTES = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def sms_message(ref_id: str, **overrides: Any) -> dict[str, Any]:
    """Return a valid SMS send request."""
    message = {
        "source": "Invoices",
        "sourceTON": "ALPHANUMERIC",
        "destination": "+46701234567",
        "userData": "Din faktura på 1 234,50 kr förfaller 2025-01-31. OCR 12345682.",
        "dcs": "GSM",
        "refId": ref_id,
    }
    message.update(overrides)
    return message


def invoice_content(ssn: str, reference: str, **overrides: Any) -> dict[str, Any]:
    """Return a valid mailbox content request of type invoice."""
    content = {
        "ssn": ssn,
        "subject": "Faktura januari",
        "type": "invoice",
        "generated_at": "2025-01-15T08:00:00+00:00",
        "parts": [
            {
                "name": "faktura.pdf",
                "data": base64.b64encode(PDF_BYTES).decode(),
                "content_type": "application/pdf",
            }
        ],
        "payment_multiple_options": {
            "payable": True,
            "currency": "SEK",
            "method": "1",
            "account": "5050-1055",
            "options": [{"due_date": "2025-01-31", "amount": "1234.50", "type": "SE_OCR", "reference": reference}],
        },
    }
    content.update(overrides)
    return content
