"""Constants, simulator settings and message builders shared by the channel client tests."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage as MimeMessage
from typing import Any, TypeVar

from invoice_delivery.channels.email import message_id_header
from invoice_delivery.simulator import SimulatorConfig

SMS_AUTH = ("sms-client-test", "sms-client-password")
MAILBOX_CLIENT = ("mailbox-client-test", "mailbox-client-secret")
TENANT = "tenant-client-test"
PUSH_PROJECT = "invoice-app-client-test"
PUSH_TOKEN = "push-client-test-token"
EMAIL_AUTH = ("email-client-test", "email-client-password")
EINVOICE_AUTH = ("einvoice-client-test", "einvoice-client-password")
PAPER_AUTH = ("paper-client-test", "paper-client-password")

# Long enough that the first status query after a send still gets "pending", even on a busy machine.
MAILBOX_DELIVERY_DELAY_S = 1.0
EINVOICE_DECISION_DELAY_S = 1.0
PAPER_PRINT_DELAY_S = 0.5
PAPER_POST_DELAY_S = 0.5
RETURNED_POSTAL_CODE = "999 99"
UNKNOWN_RECEIVER = "0007:5566778899"
SELLER_ID = "0007:5591837405"
BUYER_ID = "0192:123456785"
T = TypeVar("T")
PDF_BYTES = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def simulator_config(**channel_overrides: dict[str, Any]) -> SimulatorConfig:
    """Build the simulator settings of the client tests: test credentials, short delays, receipts in the outbox.

    ``channel_overrides`` adds fields to a channel's section, e.g. ``einvoice={"rejection_rate": 1.0}``.
    """
    config: dict[str, Any] = {
        "seed": 11,
        "sms": {"username": SMS_AUTH[0], "password": SMS_AUTH[1]},
        "mailbox": {
            "client_id": MAILBOX_CLIENT[0],
            "client_secret": MAILBOX_CLIENT[1],
            "tenant_key": TENANT,
            "delivery_delay_s": MAILBOX_DELIVERY_DELAY_S,
            "match_fraction": 1.0,
        },
        "push": {"project": PUSH_PROJECT, "bearer_token": PUSH_TOKEN},
        "email": {"username": EMAIL_AUTH[0], "password": EMAIL_AUTH[1]},
        "einvoice": {
            "username": EINVOICE_AUTH[0],
            "password": EINVOICE_AUTH[1],
            "unknown_receivers": [UNKNOWN_RECEIVER],
            "decision_delay_s": EINVOICE_DECISION_DELAY_S,
        },
        "paper": {
            "username": PAPER_AUTH[0],
            "password": PAPER_AUTH[1],
            "print_delay_s": PAPER_PRINT_DELAY_S,
            "post_delay_s": PAPER_POST_DELAY_S,
            "returned_postal_codes": [RETURNED_POSTAL_CODE],
        },
    }
    for channel, fields in channel_overrides.items():
        config[channel].update(fields)
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


def personal_number(serial: int) -> str:
    """Return a valid 12-digit Swedish personal identity number."""
    body = f"19800101{serial % 1000:03d}"
    return body + luhn_check_digit(body[2:])


def mailbox_content(serial: int, subject: str = "Faktura januari") -> bytes:
    """Return a rendered mailbox content request (a letter with one PDF) as JSON bytes."""
    content = {
        "ssn": personal_number(serial),
        "subject": subject,
        "type": "letter",
        "generated_at": "2025-01-15T08:00:00+00:00",
        "parts": [
            {"name": "faktura.pdf", "data": base64.b64encode(PDF_BYTES).decode(), "content_type": "application/pdf"}
        ],
    }
    return json.dumps(content).encode()


def push_payload(title: str = "Ny faktura") -> bytes:
    """Return a rendered push payload."""
    payload = {"title": title, "body": "1 234,50 kr, förfaller 2025-01-31", "data": {"invoice": "NK-2025-000001"}}
    return json.dumps(payload).encode()


def mime_message(key: str, to: str = "kund@example.se") -> bytes:
    """Return a rendered invoice e-mail whose Message-ID carries ``key``, with LF line ends as Python renders it."""
    message = MimeMessage()
    message["From"] = "faktura@example.com"
    message["To"] = to
    message["Subject"] = "Din faktura"
    message["Message-ID"] = message_id_header(key)
    message.set_content("Din faktura på 1 234,50 kr förfaller 2025-01-31.")
    message.add_attachment(PDF_BYTES, maintype="application", subtype="pdf", filename="faktura.pdf")
    return message.as_bytes()


def ubl_invoice(document_id: str = "NK-2025-000001") -> bytes:
    """Return a small UBL 2.1 Invoice; enough for the access point's checks."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
    xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
  <cbc:ID>{document_id}</cbc:ID>
  <cbc:IssueDate>2025-01-15</cbc:IssueDate>
</Invoice>
""".encode()


def postal_address(postal_code: str = "903 27", **overrides: str) -> dict[str, str]:
    """Return a complete Swedish postal address."""
    address = {
        "name": "Anna Andersson",
        "street": "Storgatan 1",
        "postal_code": postal_code,
        "city": "Umeå",
        "country": "SE",
    }
    address.update(overrides)
    return address


def poll_until(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 5.0) -> T:
    """Run ``read`` until ``done`` accepts its result or the time is up; return the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = asyncio.run(read())
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
