"""Render the planned deliveries of a batch, one message per channel, and store each with its SHA-256.

What each channel gets (``delivery.message.content_type``):

- ``sms``: the text, ``text/plain; charset=utf-8; dcs=GSM`` or ``dcs=UCS2``, within a part budget;
- ``mailbox``: a Kivra-style content request, ``application/json``, with the invoice PDF;
- ``push``: an FCM-style notification, ``application/json``: title, body and a deep link;
- ``email``: a complete RFC 5322 message, ``message/rfc822``, with the invoice PDF attached;
- ``einvoice``: a Peppol BIS Billing 3.0 UBL document, ``application/xml``;
- ``paper``: the invoice PDF with a window-envelope address block, ``application/pdf``.

SMS and push messages rendered inside the recipient's quiet hours get a ``not_before``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import jinja2
import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger
from invoice_delivery.quiet_hours import configured_window, next_allowed_time
from invoice_delivery.rendering import sms
from invoice_delivery.rendering.einvoice import build_ubl
from invoice_delivery.rendering.email_message import EmailContent, build_email, pdf_file_name
from invoice_delivery.rendering.errors import RenderError
from invoice_delivery.rendering.formatting import SUPPORTED_LOCALES
from invoice_delivery.rendering.payment_qr import qr_image, usingqr_payload
from invoice_delivery.rendering.pdf import PdfLayoutError, build_invoice_pdf, parse_sections
from invoice_delivery.rendering.templates import build_environment, template_name
from invoice_delivery.rendering.variables import is_payment_demand, template_variables

log = project_logger(__name__)

CHANNELS = ("sms", "mailbox", "push", "email", "einvoice", "paper")
QUIET_HOURS_CHANNELS = ("sms", "push")
# Deliveries rendered, stored and recorded together, so only one chunk of bodies is in memory at a time.
RENDER_CHUNK = 2_000
PAY_LINK_BASE = "https://pay.example.com/i/"
DEEP_LINK_BASE = "https://app.example.com/invoices/"
DEFAULT_EMAIL_SENDER = "no-reply@example.com"  # the From address unless INVOICE_DELIVERY_EMAIL_FROM is set
# SMS templates in the order they are tried, with the most parts each may take.
SMS_TEMPLATES = ("invoice", "invoice_short")
DEFAULT_SMS_SEGMENT_BUDGETS = {"invoice": 2, "invoice_short": 2}
# NOTE: our own limits, chosen so a notification shows whole on a lock screen; FCM itself only
# caps the whole payload at 4 KB.
PUSH_TITLE_LIMIT = 65
PUSH_BODY_LIMIT = 240
KIVRA_BANKGIRO_METHOD = "1"  # payment_multiple_options.method for bankgiro in the tenant API

_DELIVERIES_SQL = """
SELECT d.delivery_id, d.invoice_id, d.channel, d.idempotency_key, doc.purpose,
       i.invoice_number, i.document_type, i.type_code, i.issue_date, i.due_date, i.currency,
       i.line_net_total, i.net_total, i.vat_total, i.gross_total, i.prepaid, i.rounding, i.payable,
       i.ocr_reference, i.payment_account, i.buyer_reference,
       s.name AS seller_name, s.country AS seller_country, s.org_number AS seller_org_number,
       s.vat_number AS seller_vat_number, s.peppol_id AS seller_peppol_id, s.bankgiro, s.plusgiro, s.iban,
       s.street AS seller_street, s.postal_code AS seller_postal_code, s.city AS seller_city,
       c.customer_id, c.name AS customer_name, c.kind, c.locale, c.time_zone, c.personal_number,
       c.org_number AS customer_org_number, c.vat_number AS customer_vat_number,
       c.peppol_id AS customer_peppol_id, c.email, c.push_token, c.street, c.postal_code, c.city,
       c.country AS customer_country
FROM delivery.batch_item bi
JOIN delivery.delivery d ON d.invoice_id = bi.invoice_id AND d.state = 'planned'
JOIN delivery.document doc ON doc.invoice_id = d.invoice_id
JOIN billing.invoice i ON i.invoice_id = d.invoice_id
JOIN billing.seller s ON s.seller_id = i.seller_id
JOIN billing.customer c ON c.customer_id = i.customer_id
WHERE bi.batch_id = %s
ORDER BY d.delivery_id
"""


@dataclass(frozen=True)
class RenderedMessage:
    """One channel's message for one invoice, as stored in ``delivery.message``."""

    content_type: str
    body: bytes
    subject: str | None = None
    segments: int | None = None  # SMS parts

    @property
    def content_hash(self) -> str:
        """Return the SHA-256 of the body, hex-encoded, as ``delivery.delivery.content_hash`` stores it."""
        return hashlib.sha256(self.body).hexdigest()


def _issue_instant(row: dict[str, Any]) -> datetime:
    """Return midnight UTC of the issue date: the creation time written into documents.

    Using the issue date rather than the clock makes the same invoice render to the same bytes.
    """
    return datetime.combine(row["issue_date"], time(0, 0), tzinfo=UTC)


class Renderer:
    """Render messages for every channel; templates compile once per instance.

    A row is one row of ``_DELIVERIES_SQL`` plus the lists ``lines`` (billing.invoice_line rows)
    and ``vat_breakdown`` (billing.invoice_vat rows), as :func:`render_batch` builds it.
    """

    def __init__(
        self,
        env: jinja2.Environment | None = None,
        *,
        sms_segment_budgets: Mapping[str, int] | None = None,
        email_sender: str | None = None,
        pay_link_base: str = PAY_LINK_BASE,
        deep_link_base: str = DEEP_LINK_BASE,
    ) -> None:
        self.env = env or build_environment()
        self.sms_segment_budgets = {**DEFAULT_SMS_SEGMENT_BUDGETS, **(sms_segment_budgets or {})}
        self.email_sender = email_sender or os.environ.get("INVOICE_DELIVERY_EMAIL_FROM", DEFAULT_EMAIL_SENDER)
        self.pay_link_base = pay_link_base
        self.deep_link_base = deep_link_base
        self._channels: dict[str, Callable[[dict[str, Any]], RenderedMessage]] = {
            "sms": self.sms, "mailbox": self.mailbox, "push": self.push, "einvoice": self.einvoice,
            "paper": self.paper,
        }  # fmt: skip

    def render(self, row: dict[str, Any], *, now: datetime | None = None) -> RenderedMessage:
        """Render the message for the row's channel; raise RenderError when it cannot be rendered."""
        if row["channel"] == "email":
            return self.email(row, now=now)
        renderer = self._channels.get(row["channel"])
        if renderer is None:
            raise RenderError(f"no renderer for channel {row['channel']!r}; channels are {', '.join(CHANNELS)}")
        return renderer(row)

    # Shared steps

    def variables(self, row: dict[str, Any]) -> dict[str, Any]:
        """Return the template variables of the row; raise RenderError for an unsupported locale."""
        if row["locale"] not in SUPPORTED_LOCALES:
            raise RenderError(
                f"customer locale {row['locale']!r} has no templates; "
                f"set billing.customer.locale to one of {', '.join(SUPPORTED_LOCALES)}"
            )
        return template_variables(row, pay_link_base=self.pay_link_base, deep_link_base=self.deep_link_base)

    def _render(self, channel: str, document: str, variables: dict[str, Any], kind: str = "txt") -> str:
        name = template_name(channel, document, variables["locale"], kind)
        try:
            return self.env.get_template(name).render(variables).strip()
        except jinja2.UndefinedError as exc:
            raise RenderError(f"template {name} needs a value the invoice lacks: {exc.message}") from exc
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"template {name} does not exist in the templates folder; add it") from exc

    def _pdf(self, variables: dict[str, Any], *, window_envelope: bool) -> bytes:
        text = self._render("pdf", "invoice", variables)
        try:
            layout = parse_sections(text)
        except PdfLayoutError as exc:
            raise RenderError(f"template pdf/invoice.{variables['locale']}.txt.j2: {exc}") from exc
        qr = qr_image(usingqr_payload(variables)) if _swedish_payment(variables) else None
        return build_invoice_pdf(
            layout,
            title=f"{layout.title} {variables['invoice_number']}",
            language=variables["locale"],
            created=_issue_instant(variables),
            qr=qr,
            window_envelope=window_envelope,
        )

    def pdf(self, row: dict[str, Any], *, window_envelope: bool = False) -> bytes:
        """Return the invoice PDF, with a payment QR code on Swedish payment demands."""
        return self._pdf(self.variables(row), window_envelope=window_envelope)

    # Channels

    def sms(self, row: dict[str, Any]) -> RenderedMessage:
        """Render the SMS; fall back to the short template when the full one exceeds its part budget."""
        variables = self.variables(row)
        for document in SMS_TEMPLATES:
            budget = self.sms_segment_budgets[document]
            encoded = sms.encode(self._render("sms", document, variables))
            if encoded.segments <= budget:
                return RenderedMessage(
                    f"text/plain; charset=utf-8; dcs={encoded.dcs}", encoded.text.encode(), None, encoded.segments
                )
        raise RenderError(
            f"SMS text needs {encoded.segments} parts ({encoded.dcs}, {encoded.units} units) even in its short form "
            f"and the budget is {budget}; shorten {template_name('sms', document, row['locale'], 'txt')}"
        )

    def mailbox(self, row: dict[str, Any]) -> RenderedMessage:
        """Render a Kivra-style content request: the PDF, and payment options for a payment demand."""
        variables = self.variables(row)
        subject = self._render("mailbox", "subject", variables)
        pdf = self._pdf(variables, window_envelope=False)
        payload: dict[str, Any] = {
            "subject": subject,
            "type": "invoice" if variables["payment_demand"] else "letter",
            "generated_at": _issue_instant(row).isoformat(),
            "parts": [{"name": pdf_file_name(row["invoice_number"]), "data": base64.b64encode(pdf).decode(),
                       "content_type": "application/pdf"}],
        }
        if row["kind"] == "business":
            payload["vat_number"] = row["customer_vat_number"]
        else:
            payload["ssn"] = row["personal_number"]
        if variables["payment_demand"]:
            payload["payment_multiple_options"] = _kivra_payment(row)
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return RenderedMessage("application/json", body, subject)

    def push(self, row: dict[str, Any]) -> RenderedMessage:
        """Render an app notification: a title, a short body and a deep link to the invoice."""
        variables = self.variables(row)
        title = self._render("push", "title", variables)
        body = self._render("push", "body", variables)
        for part, text, limit in (("title", title, PUSH_TITLE_LIMIT), ("body", body, PUSH_BODY_LIMIT)):
            if len(text) > limit:
                raise RenderError(
                    f"push {part} is {len(text)} characters and the limit is {limit}; "
                    f"shorten {template_name('push', part, row['locale'], 'txt')}"
                )
        payload = {"title": title, "body": body,
                   "data": {"deep_link": variables["deep_link"], "invoice_id": str(row["invoice_id"])}}
        return RenderedMessage("application/json", json.dumps(payload, ensure_ascii=False).encode(), title)

    def email(self, row: dict[str, Any], *, now: datetime | None = None) -> RenderedMessage:
        """Render the e-mail as a complete RFC 5322 message dated ``now``, with the PDF attached."""
        if not row["email"]:
            raise RenderError("the customer has no e-mail address; add one in billing or use another channel")
        variables = self.variables(row)
        subject = self._render("email", "subject", variables)
        content = EmailContent(
            sender=self.email_sender,
            sender_name=variables["seller_name"],
            recipient=row["email"],
            recipient_name=variables["customer_name"],
            subject=subject,
            text=self._render("email", "invoice", variables) + "\n",
            html=self._render("email", "invoice", variables, kind="html") + "\n",
            pdf=self._pdf(variables, window_envelope=False),
            pdf_name=pdf_file_name(row["invoice_number"]),
        )
        body = build_email(content, message_id=row["idempotency_key"], date=now or datetime.now(UTC))
        return RenderedMessage("message/rfc822", body, subject)

    def einvoice(self, row: dict[str, Any]) -> RenderedMessage:
        """Render the Peppol BIS Billing 3.0 UBL Invoice or CreditNote; it needs no template, so any locale works."""
        return RenderedMessage("application/xml", build_ubl(row, payment_demand=is_payment_demand(row)))

    def paper(self, row: dict[str, Any]) -> RenderedMessage:
        """Render the print-ready PDF, with the return address and recipient in the envelope window."""
        if not (row["street"] and row["postal_code"] and row["city"]):
            raise RenderError("the customer has no complete postal address; add street, postal code and city")
        return RenderedMessage("application/pdf", self._pdf(self.variables(row), window_envelope=True))


def _swedish_payment(variables: dict[str, Any]) -> bool:
    """Return whether the invoice gets a payment QR code: a payment demand in SEK to a bankgiro with OCR."""
    return bool(
        variables["payment_demand"] and variables["bankgiro"] and variables["ocr_reference"]
        and variables["currency"] == "SEK"
    )


def _kivra_payment(row: dict[str, Any]) -> dict[str, Any]:
    if not (row["bankgiro"] and row["ocr_reference"]):
        raise RenderError(
            "the mailbox payment options need a bankgiro and an OCR reference and the invoice lacks "
            f"{'the bankgiro' if not row['bankgiro'] else 'the OCR reference'}; send it on another channel"
        )
    return {
        "payable": True,
        "currency": row["currency"],
        "method": KIVRA_BANKGIRO_METHOD,
        "account": row["bankgiro"],
        "options": [{"due_date": row["due_date"].isoformat(), "amount": str(row["payable"]),
                     "type": "SE_OCR", "reference": row["ocr_reference"]}],
    }


# ---------------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------------


def _attach_invoice_details(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> None:
    """Add each row's invoice lines and VAT breakdown, two queries for the whole batch."""
    invoice_ids = sorted({row["invoice_id"] for row in rows})
    lines: dict[int, list[dict]] = defaultdict(list)
    for line in conn.execute(
        "SELECT invoice_id, line_no, line_id, description, quantity, unit_code, unit_price, net_amount,"
        " vat_category, vat_rate FROM billing.invoice_line WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no",
        (invoice_ids,),
    ):
        lines[line["invoice_id"]].append(line)
    vat: dict[int, list[dict]] = defaultdict(list)
    for subtotal in conn.execute(
        "SELECT invoice_id, vat_category, vat_rate, taxable_amount, tax_amount FROM billing.invoice_vat"
        " WHERE invoice_id = ANY(%s) ORDER BY invoice_id, vat_rate DESC, vat_category",
        (invoice_ids,),
    ):
        vat[subtotal["invoice_id"]].append(subtotal)
    for row in rows:
        row["lines"] = lines[row["invoice_id"]]
        row["vat_breakdown"] = vat[row["invoice_id"]]


def _not_before(row: dict[str, Any], now: datetime, window: tuple[time, time] | None) -> datetime | None:
    """Return when an SMS or push may go out, if later than ``now``; None when it may go now."""
    if window is None or row["channel"] not in QUIET_HOURS_CHANNELS:
        return None
    try:
        allowed = next_allowed_time(now, row["time_zone"], *window)
    except ValueError as exc:
        raise RenderError(f"cannot apply quiet hours: {exc}") from exc
    return allowed if allowed > now else None


def _store_messages(conn: psycopg.Connection, messages: list[tuple]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.message (delivery_id, content_type, subject, body, segments)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (delivery_id) DO UPDATE SET content_type = EXCLUDED.content_type,"
            " subject = EXCLUDED.subject, body = EXCLUDED.body, segments = EXCLUDED.segments",
            messages,
        )


def render_batch(
    conn: psycopg.Connection,
    ctx: RunContext,
    batch_id: int,
    renderer: Renderer | None = None,
    *,
    now: datetime | None = None,
    chunk_size: int = RENDER_CHUNK,
) -> dict[str, int]:
    """Render every planned delivery of the batch, ``chunk_size`` at a time; a failing invoice fails alone.

    ``now`` (default: the clock) dates e-mails and decides quiet hours, whose window comes from
    :func:`invoice_delivery.quiet_hours.configured_window`. Returns the counts ``rendered``,
    ``failed`` and ``deferred`` (rendered, but held back by quiet hours).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    renderer = renderer or Renderer()
    now = now or datetime.now(UTC)
    window = configured_window()
    rows = conn.execute(_DELIVERIES_SQL, (batch_id,)).fetchall()
    if not rows:
        return {"rendered": 0, "failed": 0, "deferred": 0}
    _attach_invoice_details(conn, rows)

    rendered_count, failed_count, deferred = 0, 0, 0
    # Rendered bodies are stored a chunk at a time, so the bodies in memory do not grow with the batch.
    for offset in range(0, len(rows), chunk_size):
        counts = _render_chunk(conn, ctx, batch_id, rows[offset : offset + chunk_size], renderer, now, window)
        rendered_count += counts["rendered"]
        failed_count += counts["failed"]
        deferred += counts["deferred"]
    log.info("Batch %s rendered: %d messages (%d held for quiet hours), %d failed",
             batch_id, rendered_count, deferred, failed_count)
    return {"rendered": rendered_count, "failed": failed_count, "deferred": deferred}


def _render_chunk(conn: psycopg.Connection, ctx: RunContext, batch_id: int, rows: list[dict[str, Any]],
                  renderer: Renderer, now: datetime, window: tuple[time, time] | None) -> dict[str, int]:
    """Render, store and record ``rows``; a failing invoice fails alone, with its reason."""
    messages, rendered, failed = [], [], []
    for row in rows:
        try:
            message = renderer.render(row, now=now)
            not_before = _not_before(row, now, window)
        except RenderError as exc:
            failed.append(ledger.Change(row["delivery_id"], {"reason": f"render failed: {exc}"}))
            continue
        fields: dict[str, Any] = {"content_hash": message.content_hash}
        if not_before is not None:
            fields["not_before"] = not_before
        messages.append((row["delivery_id"], message.content_type, message.subject, message.body, message.segments))
        rendered.append(ledger.Change(row["delivery_id"], fields, {"content_hash": message.content_hash}))

    _store_messages(conn, messages)
    ledger.transition(conn, ctx, rendered, from_states=["planned"], to_state="rendered")
    moved_failed = ledger.transition(conn, ctx, failed, from_states=["planned"], to_state="failed")
    if moved_failed:
        ids = sorted({row["invoice_id"] for row in moved_failed})
        ledger.set_document_status(conn, ctx, ids, "failed",
                                   reasons={r["invoice_id"]: r["reason"] for r in moved_failed})
        log.warning("Batch %s: rendering failed for invoice ids %s", batch_id, ids)
    deferred = sum(1 for change in rendered if "not_before" in change.fields)
    return {"rendered": len(rendered), "failed": len(failed), "deferred": deferred}
