"""Render the planned deliveries of a batch and store each message with its SHA-256."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime, time
from typing import Any

import jinja2
import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger
from invoice_delivery.rendering import sms
from invoice_delivery.rendering.pdf import build_pdf
from invoice_delivery.rendering.templates import build_environment, template_name

log = project_logger(__name__)

SMS_SEGMENT_BUDGET = 3
PAY_LINK_BASE = "https://pay.example.com/i/"

_DELIVERIES_SQL = """
SELECT d.delivery_id, d.invoice_id, d.channel, doc.purpose,
       i.invoice_number, i.document_type, i.issue_date, i.due_date, i.currency, i.net_total, i.vat_total,
       i.gross_total, i.payable, i.ocr_reference, i.payment_account,
       s.name AS seller_name, s.bankgiro, s.org_number AS seller_org_number, s.street AS seller_street,
       s.postal_code AS seller_postal_code, s.city AS seller_city,
       c.name AS customer_name, c.kind, c.locale, c.personal_number, c.org_number AS customer_org_number,
       c.street, c.postal_code, c.city
FROM delivery.batch_item bi
JOIN delivery.delivery d ON d.invoice_id = bi.invoice_id AND d.state = 'planned'
JOIN delivery.document doc ON doc.invoice_id = d.invoice_id
JOIN billing.invoice i ON i.invoice_id = d.invoice_id
JOIN billing.seller s ON s.seller_id = i.seller_id
JOIN billing.customer c ON c.customer_id = i.customer_id
WHERE bi.batch_id = %s
ORDER BY d.delivery_id
"""


class RenderError(ValueError):
    """Raised when one invoice's message cannot be rendered; the delivery fails with this reason."""


def _variables(row: dict[str, Any], lines: list[dict]) -> dict[str, Any]:
    payment = row["purpose"] == "payment_demand"
    return {
        **row,
        "first_name": (row["customer_name"] or "").split(" ")[0],
        "payment_demand": payment,
        "amount": abs(row["payable"]),
        "pay_link": f"{PAY_LINK_BASE}{row['invoice_id']}" if payment else None,
        "lines": lines,
    }


class Renderer:
    """Renders messages for every channel; templates are compiled once per instance."""

    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self.env = env or build_environment()

    def _render(self, channel: str, document: str, locale: str, kind: str, variables: dict[str, Any]) -> str:
        name = template_name(channel, document, locale, kind)
        try:
            # A locale without its own template yet is written in English rather than not at all.
            template = self.env.select_template([name, template_name(channel, document, "en", kind)])
            return template.render(variables).strip()
        except jinja2.UndefinedError as exc:
            raise RenderError(f"template {name} needs a value the invoice lacks: {exc.message}") from exc
        except jinja2.TemplatesNotFound as exc:
            raise RenderError(f"template {name} does not exist under the templates folder") from exc

    def sms(self, row: dict[str, Any], lines: list[dict]) -> tuple[str, bytes, int]:
        text = self._render("sms", "invoice", row["locale"], "txt", _variables(row, lines))
        encoded = sms.encode(text)
        if encoded.segments > SMS_SEGMENT_BUDGET:
            raise RenderError(
                f"SMS text needs {encoded.segments} parts ({encoded.dcs}, {encoded.units} units); "
                f"the budget is {SMS_SEGMENT_BUDGET}: shorten the template"
            )
        return "text/plain; charset=utf-8; dcs=" + encoded.dcs, encoded.text.encode(), encoded.segments

    def mailbox(self, row: dict[str, Any], lines: list[dict]) -> tuple[str, bytes, str]:
        variables = _variables(row, lines)
        subject = self._render("mailbox", "subject", row["locale"], "txt", variables)
        text = self._render("mailbox", "invoice", row["locale"], "txt", variables)
        created = datetime.combine(row["issue_date"], time(0, 0), tzinfo=UTC)
        qr_payload = _qr_payload(row) if variables["payment_demand"] else None
        pdf = build_pdf(text, title=subject, created=created, qr_payload=qr_payload)
        payload: dict[str, Any] = {
            "ssn": row["personal_number"],
            "subject": subject,
            "type": "invoice" if variables["payment_demand"] else "letter",
            "generated_at": created.isoformat(),
            "parts": [{"name": f"{row['invoice_number']}.pdf", "data": base64.b64encode(pdf).decode(),
                       "content_type": "application/pdf"}],
        }
        if variables["payment_demand"]:
            payload["payment_multiple_options"] = {
                "payable": True,
                "currency": row["currency"],
                "method": "1",  # 1 = bankgiro in the tenant API
                "account": row["bankgiro"] or row["payment_account"],
                "options": [{"due_date": row["due_date"].isoformat(), "amount": str(row["payable"]),
                             "type": "SE_OCR", "reference": row["ocr_reference"]}],
            }
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return "application/json", body, subject


def _qr_payload(row: dict[str, Any]) -> str:
    """Return the Swedish payment QR payload (the "Betalningsstandard" JSON shape used by banks' apps)."""
    return json.dumps({
        "uqr": 1, "tp": 1, "nme": row["seller_name"], "cid": row["seller_org_number"],
        "iref": row["ocr_reference"], "ddt": row["due_date"].strftime("%Y%m%d") if row["due_date"] else None,
        "due": float(row["payable"]), "pt": "BG", "acc": row["bankgiro"],
    }, separators=(",", ":"))


def _lines_by_invoice(conn: psycopg.Connection, invoice_ids: list[int]) -> dict[int, list[dict]]:
    lines: dict[int, list[dict]] = defaultdict(list)
    for line in conn.execute(
        "SELECT invoice_id, line_no, description, quantity, unit_code, unit_price, net_amount, vat_rate"
        " FROM billing.invoice_line WHERE invoice_id = ANY(%s) ORDER BY invoice_id, line_no",
        (invoice_ids,),
    ):
        lines[line["invoice_id"]].append(line)
    return lines


def render_batch(conn: psycopg.Connection, ctx: RunContext, batch_id: int, renderer: Renderer | None = None) -> dict:
    """Render every planned delivery of the batch; a failing invoice fails alone, with its reason."""
    renderer = renderer or Renderer()
    rows = conn.execute(_DELIVERIES_SQL, (batch_id,)).fetchall()
    if not rows:
        return {"rendered": 0, "failed": 0}
    lines = _lines_by_invoice(conn, sorted({r["invoice_id"] for r in rows}))
    messages, rendered, failed = [], [], []
    for row in rows:
        try:
            if row["channel"] == "sms":
                content_type, body, segments = renderer.sms(row, lines[row["invoice_id"]])
                subject = None
            elif row["channel"] == "mailbox":
                content_type, body, subject = renderer.mailbox(row, lines[row["invoice_id"]])
                segments = None
            else:
                raise RenderError(f"no renderer for channel {row['channel']!r}")
        except RenderError as exc:
            failed.append(ledger.Change(row["delivery_id"], {"reason": f"render failed: {exc}"}))
            continue
        digest = hashlib.sha256(body).hexdigest()
        messages.append((row["delivery_id"], content_type, subject, body, segments))
        rendered.append(ledger.Change(row["delivery_id"], {"content_hash": digest}, {"content_hash": digest}))

    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.message (delivery_id, content_type, subject, body, segments)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (delivery_id) DO UPDATE SET content_type = EXCLUDED.content_type,"
            " subject = EXCLUDED.subject, body = EXCLUDED.body, segments = EXCLUDED.segments",
            messages,
        )
    ledger.transition(conn, ctx, rendered, from_states=["planned"], to_state="rendered")
    moved_failed = ledger.transition(conn, ctx, failed, from_states=["planned"], to_state="failed")
    if moved_failed:
        ids = sorted({row["invoice_id"] for row in moved_failed})
        ledger.set_document_status(conn, ctx, ids, "failed",
                                   reasons={r["invoice_id"]: r["reason"] for r in moved_failed})
        log.warning("Batch %s: rendering failed for invoice ids %s", batch_id, ids)
    log.info("Batch %s rendered: %d messages, %d failed", batch_id, len(rendered), len(failed))
    return {"rendered": len(rendered), "failed": len(failed)}
