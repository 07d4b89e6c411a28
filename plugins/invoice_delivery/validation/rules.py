"""Row-level checks that Great Expectations cannot express directly, computed as boolean columns.

Each check adds a column ``ok_<rule>`` to the batch frame; the suite then expects every value of
it to be true, and a failing row's reason is built from the :class:`Rule` here. Arithmetic uses
``Decimal`` throughout: the frame holds the database's numeric values as ``Decimal`` objects.

The arithmetic rules follow EN 16931 (the European e-invoicing norm behind Peppol BIS 3.0):
BR-CO-10 (line nets sum to the line total), BR-CO-13 (tax exclusive = line total - allowances +
charges), BR-CO-14 (VAT total = sum of VAT per rate), BR-CO-15 (gross = net + VAT), BR-CO-16
(payable = gross - prepaid + rounding), and VAT per rate = taxable amount x rate, rounded once per
rate (not per line).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
import phonenumbers
from stdnum import dk, ean, luhn, no
from stdnum.exceptions import ValidationError
from stdnum.se import orgnr, personnummer

from invoice_delivery.masking import mask_value

_CENT = Decimal("0.01")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_PEPPOL_ID = re.compile(r"^(\d{4}):(\S{1,50})$")

# Standard and reduced VAT rates by seller country, in percent. A country not listed is not checked.
ALLOWED_VAT_RATES: dict[str, frozenset[Decimal]] = {
    "SE": frozenset(map(Decimal, ("25", "12", "6", "0"))),
    "NO": frozenset(map(Decimal, ("25", "15", "12", "0"))),
    "DK": frozenset(map(Decimal, ("25", "0"))),
    "FI": frozenset(map(Decimal, ("25.5", "14", "13.5", "10", "0"))),
}

# Peppol participant identifier schemes (ICD) whose value this project can check.
_PEPPOL_VALUE_CHECKS: dict[str, Callable[[str], bool]] = {
    "0007": orgnr.is_valid,  # Swedish organisation number
    "0192": no.orgnr.is_valid,  # Norwegian organisation number
    "0184": dk.cvr.is_valid,  # Danish CVR number
    "0088": ean.is_valid,  # GS1 Global Location Number
}


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


def _amounts(row: dict[str, Any], *names: str) -> list[Decimal] | None:
    values = [row[name] for name in names]
    return None if any(v is None for v in values) else values


def _lines_sum_ok(row: dict[str, Any]) -> bool:
    if row["line_net_total"] is None or row["line_count"] == 0:
        return True
    return row["lines_net_sum"] == row["line_net_total"]


def _net_ok(row: dict[str, Any]) -> bool:
    if row["line_net_total"] is None:
        return True
    return row["net_total"] == row["line_net_total"] - (row["allowance_total"] or 0) + (row["charge_total"] or 0)


def _vat_sum_ok(row: dict[str, Any]) -> bool:
    if row["vat_rows"] == 0:
        return True
    return row["vat_total"] == row["vat_tax_sum"] and row["net_total"] == row["vat_taxable_sum"]


def _vat_per_rate_ok(row: dict[str, Any]) -> bool:
    for rate, taxable, tax in row["vat_breakdown"] or []:
        expected = (Decimal(taxable) * Decimal(rate) / 100).quantize(_CENT, rounding=ROUND_HALF_UP)
        if Decimal(tax) != expected:
            return False
    return True


def _gross_ok(row: dict[str, Any]) -> bool:
    values = _amounts(row, "net_total", "vat_total", "gross_total")
    return values is not None and values[2] == values[0] + values[1]


def _payable_ok(row: dict[str, Any]) -> bool:
    values = _amounts(row, "gross_total", "payable")
    if values is None:
        return False
    return row["payable"] == row["gross_total"] - (row["prepaid"] or 0) + (row["rounding"] or 0)


def _two_decimals(row: dict[str, Any]) -> bool:
    names = ("line_net_total", "net_total", "vat_total", "gross_total", "prepaid", "rounding", "payable")
    amounts = [row[name] for name in names if row[name] is not None]
    return all(a == a.quantize(_CENT) for a in amounts) and not row["line_amount_over_two_decimals"]


def _vat_rates_allowed(row: dict[str, Any]) -> bool:
    allowed = ALLOWED_VAT_RATES.get(row["seller_country"])
    if allowed is None:
        return True
    return all(Decimal(rate) in allowed for rate in row["vat_rates"] or [])


def _due_date_valid(row: dict[str, Any]) -> bool:
    if row["document_type"] == "credit_note":
        return True
    due, issued = row["due_date"], row["issue_date"]
    if due is None:
        # EN 16931 BR-CO-25: a positive amount due needs a due date or payment terms.
        return not _is_payment_demand(row) or bool(row["payment_terms"])
    return issued is not None and due >= issued


@functools.lru_cache(maxsize=200_000)
def ocr_valid(reference: str, variant: str = "luhn") -> bool:
    """Check a Swedish OCR reference: 2 to 25 digits, Luhn check digit, and the length digit if used."""
    if not (reference.isdigit() and 2 <= len(reference) <= 25 and luhn.is_valid(reference)):
        return False
    if variant == "luhn_length":
        return len(reference) >= 3 and int(reference[-2]) == len(reference) % 10
    return True


def giro_valid(number: str | None, lengths: range) -> bool:
    """Check a bankgiro (7 or 8 digits) or plusgiro (2 to 8 digits) number: Luhn over all digits."""
    if not number:
        return True
    digits = number.replace("-", "").replace(" ", "")
    return digits.isdigit() and len(digits) in lengths and luhn.is_valid(digits)


def _ocr_valid(row: dict[str, Any]) -> bool:
    # Only a Swedish payment demand in SEK carries an OCR reference; others carry free text.
    if not (_is_payment_demand(row) and row["currency"] == "SEK" and row["seller_country"] == "SE"):
        return True
    return ocr_valid(row["ocr_reference"] or "", row["ocr_variant"] or "luhn")


# The contact-point checks below parse with phonenumbers and python-stdnum, which cost tens of
# microseconds per value; the caches make a value seen again in a batch (or a later one) free.
@functools.lru_cache(maxsize=200_000)
def mobile_valid(mobile: str, country: str) -> bool:
    """Check that ``mobile`` parses (as written in ``country``) to a valid mobile number."""
    try:
        number = phonenumbers.parse(mobile, country)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


@functools.lru_cache(maxsize=200_000)
def personal_number_valid(number: str) -> bool:
    try:
        personnummer.validate(number)
    except ValidationError:
        return False
    return True


def _mobile_valid(row: dict[str, Any]) -> bool:
    return not row["mobile"] or mobile_valid(row["mobile"], row["customer_country"] or "SE")


def _personal_number_valid(row: dict[str, Any]) -> bool:
    return not row["personal_number"] or personal_number_valid(row["personal_number"])


@functools.lru_cache(maxsize=50_000)
def peppol_id_valid(value: str | None) -> bool:
    """Check ``scheme:value``: a four-digit scheme, and the value's own check digits where known."""
    if not value:
        return True
    match = _PEPPOL_ID.match(value)
    if not match:
        return False
    check = _PEPPOL_VALUE_CHECKS.get(match.group(1))
    return check(match.group(2)) if check else True


def _email_valid(row: dict[str, Any]) -> bool:
    return not row["email"] or bool(_EMAIL.match(row["email"]))


ROW_RULES: tuple[Rule, ...] = (
    Rule("customer_exists", "customer_id", "the referenced customer does not exist in billing.customer",
         lambda row: bool(row["customer_found"])),
    Rule("line_total_matches_lines", "line_net_total", "line net amounts do not sum to the line total (BR-CO-10)",
         _lines_sum_ok),
    Rule("net_total_matches", "net_total",
         "net total is not line total - allowances + charges (BR-CO-13)", _net_ok),
    Rule("vat_total_matches_breakdown", "vat_total",
         "VAT total or taxable amounts do not match the VAT breakdown (BR-CO-14)", _vat_sum_ok),
    Rule("vat_per_rate", "vat_total", "VAT of a rate is not its taxable amount x rate, rounded once", _vat_per_rate_ok),
    Rule("gross_total_matches", "gross_total", "gross total is not net total + VAT (BR-CO-15)", _gross_ok),
    Rule("payable_matches", "payable", "payable is not gross - prepaid + rounding (BR-CO-16)", _payable_ok),
    Rule("amounts_two_decimals", "payable", "an amount has more than two decimals", _two_decimals),
    Rule("vat_rate_allowed", "vat_total", "a VAT rate is not allowed in the seller's country", _vat_rates_allowed),
    Rule("due_date_valid", "due_date",
         "a payment demand needs a due date (or payment terms) on or after its issue date",
         _due_date_valid),
    Rule("ocr_valid", "ocr_reference", "the OCR reference fails its check digit (Luhn) or length digit",
         _ocr_valid),
    Rule("bankgiro_valid", "bankgiro", "the seller's bankgiro number fails its check digit",
         lambda row: giro_valid(row["bankgiro"], range(7, 9))),
    Rule("plusgiro_valid", "plusgiro", "the seller's plusgiro number fails its check digit",
         lambda row: giro_valid(row["plusgiro"], range(2, 9))),
    Rule("mobile_valid", "mobile", "the mobile number is not a valid mobile number", _mobile_valid, personal=True),
    Rule("email_valid", "email", "the e-mail address is not valid", _email_valid, personal=True),
    Rule("personal_number_valid", "personal_number", "the personal identity number is invalid",
         _personal_number_valid, personal=True),
    Rule("peppol_id_valid", "customer_peppol_id", "the buyer's Peppol participant id is invalid",
         lambda row: peppol_id_valid(row["customer_peppol_id"])),
)


def add_rule_columns(frame: pd.DataFrame, records: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Return ``frame`` with one boolean ``ok_<rule>`` column per row rule.

    ``records`` are the frame's rows as the database driver returned them, in the frame's order;
    passing them saves converting the frame back to dicts.
    """
    if records is None:
        # pandas shows missing values as NaN or NaT; the checks expect None.
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    elif len(records) != len(frame):
        raise ValueError(f"got {len(records)} records for a frame of {len(frame)} rows; pass the frame's own rows")
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
