"""Build the variables every message template gets from one invoice row.

Whether a message demands payment is decided here, once, for all channels: only an invoice (not a
credit note) with a positive amount to pay, unless routing planned it as informational. Credit notes
and zero or negative amounts are informational, whatever routing planned.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from invoice_delivery.rendering.errors import RenderError

# Free-text fields whose line breaks and runs of spaces are collapsed, so text layouts stay intact.
_TEXT_FIELDS = (
    "customer_name", "seller_name", "street", "postal_code", "city", "seller_street", "seller_postal_code",
    "seller_city", "invoice_number",
)  # fmt: skip


def is_payment_demand(row: dict[str, Any]) -> bool:
    """Return whether the invoice demands payment: a positive invoice not planned as informational."""
    positive_invoice = row["document_type"] == "invoice" and row["payable"] is not None and row["payable"] > 0
    return positive_invoice and row.get("purpose") in ("payment_demand", None)


def informational_kind(row: dict[str, Any]) -> str | None:
    """Return why nothing is to be paid: ``credit_note``, ``zero``, ``credit_balance``; None for a demand."""
    if is_payment_demand(row):
        return None
    if row["document_type"] == "credit_note":
        return "credit_note"
    if row["payable"] is not None and row["payable"] < 0:
        return "credit_balance"
    return "zero"


def _one_line(value: Any) -> Any:
    return " ".join(value.split()) if isinstance(value, str) else value


def _check_payment_data(row: dict[str, Any], account: str | None) -> None:
    """Raise RenderError when a payment demand lacks its due date or an account to pay to."""
    missing = [] if row.get("due_date") else ["due date"]
    if not account:
        missing.append("bankgiro, IBAN or payment account")
    if missing:
        raise RenderError(
            f"invoice {row['invoice_id']} is a payment demand without {' or '.join(missing)}; "
            "correct the invoice in the billing system"
        )


def template_variables(row: dict[str, Any], *, pay_link_base: str, deep_link_base: str) -> dict[str, Any]:
    """Return the template variables of an invoice row; raise RenderError when a demand lacks payment data."""
    payment_demand = is_payment_demand(row)
    account = row.get("bankgiro") or row.get("payment_account") or row.get("iban")
    if payment_demand:
        _check_payment_data(row, account)
    variables = {**row, **{name: _one_line(row.get(name)) for name in _TEXT_FIELDS}}
    variables["lines"] = [{**line, "description": _one_line(line["description"])} for line in row["lines"]]
    name = variables["customer_name"] or ""
    country = row.get("customer_country")
    variables.update(
        payment_demand=payment_demand,
        informational_kind=informational_kind(row),
        credit_note=row["document_type"] == "credit_note",
        # Persons are greeted by first name, businesses by their full name.
        greeting_name=name.split(" ")[0] if row["kind"] == "person" else name,
        amount=abs(row["payable"] or Decimal(0)),
        payment_account=account,
        pay_link=f"{pay_link_base}{row['invoice_id']}" if payment_demand else None,
        deep_link=f"{deep_link_base}{row['invoice_id']}",
        # A letter abroad needs the country on its last address line.
        foreign_recipient=bool(country) and country != row.get("seller_country"),
    )
    return variables
