"""Row-level checks that Great Expectations cannot express directly, computed as boolean columns.

Each check adds a column ``ok_<rule>`` to the batch frame; the suite then expects every value of
it to be true, and a failing row's reason is built from the :class:`Rule` here. Arithmetic uses
``Decimal`` throughout: the frame holds the database's numeric values as ``Decimal`` objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
import phonenumbers
from stdnum import luhn
from stdnum.exceptions import ValidationError
from stdnum.se import personnummer

from invoice_delivery.masking import mask_value

_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Rule:
    """A row check: its name, the column it judges, and how to explain a failure."""

    name: str
    column: str
    message: str
    check: Callable[[dict[str, Any]], bool]
    personal: bool = False  # mask the shown value


def _is_payment_demand(row: dict[str, Any]) -> bool:
    return row["document_type"] == "invoice" and row["payable"] is not None and row["payable"] > 0


def _totals_consistent(row: dict[str, Any]) -> bool:
    net, vat, gross = row["net_total"], row["vat_total"], row["gross_total"]
    prepaid, rounding, payable = row["prepaid"], row["rounding"], row["payable"]
    if None in (net, vat, gross, payable):
        return False
    return gross == net + vat and payable == gross - (prepaid or 0) + (rounding or 0)


def _two_decimals(row: dict[str, Any]) -> bool:
    amounts = [row[name] for name in ("net_total", "vat_total", "gross_total", "prepaid", "rounding", "payable")]
    return all(a is None or a == a.quantize(_CENT) for a in amounts)


def _due_date_valid(row: dict[str, Any]) -> bool:
    if row["document_type"] == "credit_note":
        return True
    due, issued = row["due_date"], row["issue_date"]
    return due is not None and issued is not None and due >= issued


def _ocr_valid(row: dict[str, Any]) -> bool:
    # Only a Swedish payment demand in SEK carries an OCR reference; others carry free text.
    if not (_is_payment_demand(row) and row["currency"] == "SEK" and row["seller_country"] == "SE"):
        return True
    reference = row["ocr_reference"] or ""
    return reference.isdigit() and 2 <= len(reference) <= 25 and luhn.is_valid(reference)


def _mobile_valid(row: dict[str, Any]) -> bool:
    mobile = row["mobile"]
    if not mobile:
        return True
    try:
        number = phonenumbers.parse(mobile, row["customer_country"] or "SE")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def _personal_number_valid(row: dict[str, Any]) -> bool:
    number = row["personal_number"]
    if not number:
        return True
    try:
        personnummer.validate(number)
    except ValidationError:
        return False
    return True


ROW_RULES: tuple[Rule, ...] = (
    Rule("customer_exists", "customer_id", "the referenced customer does not exist in billing.customer",
         lambda row: bool(row["customer_found"])),
    Rule("totals_consistent", "payable",
         "totals do not add up: gross must equal net + VAT, payable must equal gross - prepaid + rounding",
         _totals_consistent),
    Rule("amounts_two_decimals", "payable", "an amount has more than two decimals", _two_decimals),
    Rule("due_date_valid", "due_date", "an invoice needs a due date on or after its issue date", _due_date_valid),
    Rule("ocr_valid", "ocr_reference", "the OCR reference fails its Luhn check digit", _ocr_valid),
    Rule("mobile_valid", "mobile", "the mobile number is not a valid mobile number", _mobile_valid, personal=True),
    Rule("personal_number_valid", "personal_number", "the personal identity number is invalid",
         _personal_number_valid, personal=True),
)


def add_rule_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with one boolean ``ok_<rule>`` column per row rule."""
    # pandas shows missing values as NaN or NaT; the checks expect None.
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for rule in ROW_RULES:
        frame[f"ok_{rule.name}"] = [bool(rule.check(row)) for row in records]
    return frame


def shown_value(rule: Rule | None, column: str, value: Any) -> str | None:
    """Render a failing value for a quarantine reason, masked when it is personal data."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if (rule and rule.personal) or column in ("mobile", "email", "personal_number"):
        return mask_value(value)
    return str(value)
