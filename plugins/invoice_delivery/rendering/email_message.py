"""Build the invoice e-mail: an RFC 5322 message with plain text, HTML and the invoice PDF.

The structure is ``multipart/mixed`` holding a ``multipart/alternative`` (``text/plain`` first,
then ``text/html``) and the PDF as an attachment. Lines end in CRLF, as SMTP submission wants.
The Message-ID carries the delivery's idempotency key, so a resend is recognisable as the same
message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from invoice_delivery.rendering.errors import RenderError

MESSAGE_ID_DOMAIN = "invoice-delivery"
_UNSAFE_FILE_NAME = re.compile(r"[^\w.-]+")


@dataclass(frozen=True)
class EmailContent:
    """The parts of one invoice e-mail, already rendered."""

    sender: str  # addr-spec, e.g. no-reply@example.com
    sender_name: str
    recipient: str
    recipient_name: str
    subject: str
    text: str
    html: str
    pdf: bytes
    pdf_name: str


def _address(display_name: str, addr_spec: str, role: str) -> Address:
    try:
        address = Address(display_name=display_name, addr_spec=addr_spec)
    except (ValueError, IndexError) as exc:
        # The value is personal data when it is the recipient's, so it stays out of the reason.
        raise RenderError(f"the {role} e-mail address is not a valid RFC 5322 address; correct it in billing") from exc
    if not address.username or not address.domain:
        raise RenderError(f"the {role} e-mail address lacks a local part or a domain; correct it in billing")
    return address


def pdf_file_name(invoice_number: str) -> str:
    """Return ``<invoice number>.pdf`` with characters that mail clients mangle replaced by ``_``."""
    return f"{_UNSAFE_FILE_NAME.sub('_', invoice_number).strip('_') or 'invoice'}.pdf"


def build_email(content: EmailContent, *, message_id: str, date: datetime) -> bytes:
    """Return the message as bytes with CRLF line ends; raise RenderError on an unusable address."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = _address(content.sender_name, content.sender, "sender")
    message["To"] = _address(content.recipient_name, content.recipient, "recipient")
    message["Subject"] = content.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}@{MESSAGE_ID_DOMAIN}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not reply to it
    message.set_content(content.text, subtype="plain", charset="utf-8")
    message.add_alternative(content.html, subtype="html", charset="utf-8")
    message.add_attachment(content.pdf, maintype="application", subtype="pdf", filename=content.pdf_name)
    return message.as_bytes()
