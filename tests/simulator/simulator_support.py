"""Constants and request builders shared by the gateway simulator tests and their fixtures."""

from __future__ import annotations

import base64
import socket
from email.message import EmailMessage
from typing import Any

from invoice_delivery.simulator import SimulatorConfig

SMS_AUTH = ("sms-test-user", "sms-test-password")
MAILBOX_CLIENT = ("mailbox-test-client", "mailbox-test-secret")
TENANT = "tenant-test"
SMS_SECRET = "whsec_" + base64.b64encode(b"sms receipts signing key for tests").decode()
RECEIPT_DELAY_S = 0.2
MAILBOX_DELIVERY_DELAY_S = 0.3

PUSH_PROJECT = "invoice-app-test"
PUSH_TOKEN = "push-test-bearer-token"
PUSH_SECRET = "whsec_" + base64.b64encode(b"push receipts signing key for tests").decode()
EMAIL_AUTH = ("email-test-user", "email-test-password")
EMAIL_SECRET = "whsec_" + base64.b64encode(b"email receipts signing key for tests").decode()
EINVOICE_AUTH = ("einvoice-test-user", "einvoice-test-password")
EINVOICE_SECRET = "whsec_" + base64.b64encode(b"einvoice receipts signing key for tests").decode()
EINVOICE_DECISION_DELAY_S = 1.0
PAPER_AUTH = ("paper-test-user", "paper-test-password")
# Long enough that polling catches every status, even on a busy machine.
PAPER_PRINT_DELAY_S = 0.5
PAPER_POST_DELAY_S = 0.5
RETURNED_POSTAL_CODE = "999 99"
UNKNOWN_RECEIVER = "0007:5566778899"

# Valid participant ids of every scheme the access point accepts.
SELLER_ID = "0007:5591837405"
BUYER_IDS = {
    "0007": "0007:5591837405",
    "0192": "0192:123456785",
    "0088": "0088:7300010000001",
    "0184": "0184:13585628",
    "0037": "0037:2077474-0",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def receipt_config(url: str | None) -> dict[str, Any]:
    """Return the receipt settings of one channel: short delay, fast retries."""
    return {"url": url, "delay_s": RECEIPT_DELAY_S, "retry_backoff_s": 0.1, "max_attempts": 3}


def simulator_config(receipt_url: str | None, **overrides: Any) -> SimulatorConfig:
    """Build the test configuration: test credentials, short delays, fast receipt retries.

    SMS receipts go to ``receipt_url``; push, e-mail and e-invoice receipts to
    ``receipt_url`` + ``/push``, ``/email`` and ``/einvoice``.
    """

    def channel_url(channel: str) -> str | None:
        return f"{receipt_url}/{channel}" if receipt_url is not None else None

    config: dict[str, Any] = {
        "seed": 7,
        "sms": {
            "username": SMS_AUTH[0],
            "password": SMS_AUTH[1],
            "webhook_secret": SMS_SECRET,
            "receipts": receipt_config(receipt_url),
        },
        "mailbox": {
            "client_id": MAILBOX_CLIENT[0],
            "client_secret": MAILBOX_CLIENT[1],
            "tenant_key": TENANT,
            "delivery_delay_s": MAILBOX_DELIVERY_DELAY_S,
        },
        "push": {
            "project": PUSH_PROJECT,
            "bearer_token": PUSH_TOKEN,
            "webhook_secret": PUSH_SECRET,
            "receipts": receipt_config(channel_url("push")),
            "dead_tokens": ["token-of-uninstalled-app"],
            "open_rate": 1.0,
        },
        "email": {
            "username": EMAIL_AUTH[0],
            "password": EMAIL_AUTH[1],
            "webhook_secret": EMAIL_SECRET,
            "receipts": receipt_config(channel_url("email")),
        },
        "einvoice": {
            "username": EINVOICE_AUTH[0],
            "password": EINVOICE_AUTH[1],
            "webhook_secret": EINVOICE_SECRET,
            "receipts": receipt_config(channel_url("einvoice")),
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


def push_message(token: str = "fcm-installation-token-1", **overrides: Any) -> dict[str, Any]:
    """Return a valid push send request."""
    message: dict[str, Any] = {
        "token": token,
        "notification": {"title": "Ny faktura", "body": "1 234,50 kr, förfaller 2025-01-31"},
        "data": {"invoice": "NK-2025-000001", "link": "invoiceapp://invoices/NK-2025-000001"},
    }
    message.update(overrides)
    return {"message": message}


def email_message(key: str, to: str = "kund@example.se", *, with_pdf: bool = True) -> EmailMessage:
    """Return an invoice e-mail with text and HTML alternatives, a PDF attachment and the key's Message-ID."""
    message = EmailMessage()
    message["From"] = "Nordlys Energi <faktura@example.com>"
    message["To"] = to
    message["Subject"] = "Din faktura från Nordlys Energi"
    message["Message-ID"] = f"<{key}@invoice-delivery>"
    message.set_content("Din faktura på 1 234,50 kr förfaller 2025-01-31.")
    message.add_alternative("<p>Din faktura på <b>1 234,50 kr</b> förfaller 2025-01-31.</p>", subtype="html")
    if with_pdf:
        message.add_attachment(PDF_BYTES, maintype="application", subtype="pdf", filename="faktura.pdf")
    return message


def ubl_invoice(document_id: str = "NK-2025-000001", root: str = "Invoice") -> bytes:
    """Return a small UBL 2.1 Invoice or CreditNote; enough for the access point's checks."""
    namespace = f"urn:oasis:names:specification:ubl:schema:xsd:{root}-2"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<{root} xmlns="{namespace}"
    xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
    xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
  <cbc:CustomizationID>urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0</cbc:CustomizationID>
  <cbc:ProfileID>urn:fdc:peppol.eu:2017:poacc:billing:01:1.0</cbc:ProfileID>
  <cbc:ID>{document_id}</cbc:ID>
  <cbc:IssueDate>2025-01-15</cbc:IssueDate>
  <cbc:DocumentCurrencyCode>SEK</cbc:DocumentCurrencyCode>
</{root}>
""".encode()


def einvoice_headers(key: str | None, receiver: str = BUYER_IDS["0007"], **overrides: str) -> dict[str, str]:
    """Return the headers of a valid document submission."""
    headers = {"Content-Type": "application/xml", "X-Peppol-Sender": SELLER_ID, "X-Peppol-Receiver": receiver}
    if key is not None:
        headers["Idempotency-Key"] = key
    headers.update(overrides)
    return headers


def print_job(postal_code: str = "903 27", **overrides: Any) -> dict[str, Any]:
    """Return a valid print job with one PDF."""
    job: dict[str, Any] = {
        "documents": [
            {"name": "faktura.pdf", "content_type": "application/pdf", "data": base64.b64encode(PDF_BYTES).decode()}
        ],
        "address": {
            "name": "Anna Andersson",
            "street": "Storgatan 1",
            "postal_code": postal_code,
            "city": "Umeå",
            "country": "SE",
        },
        "options": {"duplex": True, "colour": False, "postage": "B"},
    }
    job.update(overrides)
    return job
