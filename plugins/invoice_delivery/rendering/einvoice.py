"""Build a Peppol BIS Billing 3.0 UBL ``Invoice`` or ``CreditNote`` from a canonical invoice.

Elements are written in the order of the UBL 2.1 schema, which BIS 3.0 validators enforce. Amounts
carry two decimals and the document currency. The buyer and seller endpoints are Peppol
participant ids stored as ``scheme:value`` (scheme 0007 is a Swedish organisation number, 0088 a
GLN, 0192 a Norwegian organisation number).

A payment demand gets ``cac:PaymentMeans`` with the payment reference (``cbc:PaymentID``) and the
payee account; informational documents (credit notes, zero and negative amounts) get none.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from lxml import etree

from invoice_delivery.ingest.ubl import CAC_NS, CBC_NS, CREDIT_NOTE_NS, INVOICE_NS
from invoice_delivery.rendering.errors import RenderError

CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
# UNCL4461 payment means: 30 credit transfer, 58 SEPA credit transfer.
CREDIT_TRANSFER, SEPA_CREDIT_TRANSFER = "30", "58"
# VATEX codes for the categories that need an exemption reason (EN 16931 rules BR-AE-10, BR-IC-10,
# BR-G-10 and BR-O-10). Category E has no single code, so it gets a reason text instead.
EXEMPTION_CODES = {"AE": "VATEX-EU-AE", "K": "VATEX-EU-IC", "G": "VATEX-EU-G", "O": "VATEX-EU-O"}
EXEMPTION_TEXTS = {"E": "Exempt from VAT"}
_CENT = Decimal("0.01")


def _cbc(parent: etree._Element, name: str, text: Any, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CBC_NS}}}{name}", attributes)
    element.text = str(text)
    return element


def _cac(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{CAC_NS}}}{name}")


def _amount(parent: etree._Element, name: str, value: Decimal, currency: str) -> None:
    _cbc(parent, name, f"{Decimal(value).quantize(_CENT):f}", currencyID=currency)


def _plain(value: Decimal) -> str:
    """Write a quantity or price without trailing zeros or an exponent: 49.0000 gives 49."""
    return f"{Decimal(value).normalize():f}"


def _endpoint(parent: etree._Element, participant_id: str | None, party: str) -> None:
    scheme, _, value = (participant_id or "").partition(":")
    if not scheme or not value:
        raise RenderError(
            f"the {party} has no Peppol participant id as scheme:value (got {participant_id!r}); "
            "store one such as 0007:5560000000 in billing"
        )
    _cbc(parent, "EndpointID", value, schemeID=scheme)


def _address(party: etree._Element, street: str | None, city: str | None, postal_code: str | None,
             country: str | None, who: str) -> None:
    if not country:
        raise RenderError(f"the {who} has no country code, which EN 16931 requires; store it in billing")
    address = _cac(party, "PostalAddress")
    if street:
        _cbc(address, "StreetName", street)
    if city:
        _cbc(address, "CityName", city)
    if postal_code:
        _cbc(address, "PostalZone", postal_code)
    _cbc(_cac(address, "Country"), "IdentificationCode", country)


def _party(parent: etree._Element, role: str, fields: dict[str, Any]) -> None:
    party = _cac(_cac(parent, role), "Party")
    _endpoint(party, fields["peppol_id"], fields["who"])
    _cbc(_cac(party, "PartyName"), "Name", fields["name"])
    _address(party, fields["street"], fields["city"], fields["postal_code"], fields["country"], fields["who"])
    if fields["vat_number"]:
        tax_scheme = _cac(party, "PartyTaxScheme")
        _cbc(tax_scheme, "CompanyID", fields["vat_number"])
        _cbc(_cac(tax_scheme, "TaxScheme"), "ID", "VAT")
    legal = _cac(party, "PartyLegalEntity")
    _cbc(legal, "RegistrationName", fields["name"])
    if fields["org_number"]:
        _cbc(legal, "CompanyID", fields["org_number"])


def _seller(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "who": "seller", "peppol_id": row["seller_peppol_id"], "name": row["seller_name"],
        "street": row["seller_street"], "city": row["seller_city"], "postal_code": row["seller_postal_code"],
        "country": row["seller_country"], "vat_number": row["seller_vat_number"],
        "org_number": row["seller_org_number"],
    }  # fmt: skip


def _buyer(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "who": "buyer", "peppol_id": row["customer_peppol_id"], "name": row["customer_name"],
        "street": row["street"], "city": row["city"], "postal_code": row["postal_code"],
        "country": row["customer_country"], "vat_number": row["customer_vat_number"],
        "org_number": row["customer_org_number"],
    }  # fmt: skip


def _payment_means(root: etree._Element, row: dict[str, Any]) -> None:
    """Add how to pay: bankgiro or plusgiro (Swedish Peppol branch ids), else the IBAN or account."""
    means = _cac(root, "PaymentMeans")
    account, branch = row["bankgiro"], "SE:BANKGIRO"
    if not account and row["plusgiro"]:
        account, branch = row["plusgiro"], "SE:PLUSGIRO"
    if account:
        account = re.sub(r"\D", "", account)
    else:
        account, branch = row["iban"] or row["payment_account"], None
    if not account:
        raise RenderError("the payment demand has no bankgiro, plusgiro, IBAN or account to pay to")
    sepa = branch is None and row["currency"] == "EUR" and bool(row["iban"])
    _cbc(means, "PaymentMeansCode", SEPA_CREDIT_TRANSFER if sepa else CREDIT_TRANSFER)
    if row["ocr_reference"]:
        _cbc(means, "PaymentID", row["ocr_reference"])
    payee_account = _cac(means, "PayeeFinancialAccount")
    _cbc(payee_account, "ID", account)
    if branch:
        _cbc(_cac(payee_account, "FinancialInstitutionBranch"), "ID", branch)


def _tax_category(parent: etree._Element, name: str, category: str, rate: Decimal) -> None:
    tax_category = _cac(parent, name)
    _cbc(tax_category, "ID", category)
    if category != "O":  # "not subject to VAT" carries no rate (BR-O-05)
        _cbc(tax_category, "Percent", _plain(rate))
    if category in EXEMPTION_CODES:
        _cbc(tax_category, "TaxExemptionReasonCode", EXEMPTION_CODES[category])
    elif category in EXEMPTION_TEXTS:
        _cbc(tax_category, "TaxExemptionReason", EXEMPTION_TEXTS[category])
    _cbc(_cac(tax_category, "TaxScheme"), "ID", "VAT")


def _document_allowances(root: etree._Element, row: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """Add document-level allowances and charges; return their totals (allowances, charges).

    The canonical invoice keeps no document-level allowances or charges, only their effect: per VAT
    category and rate, the taxable amount differs from the sum of the lines. Each difference
    becomes one charge (positive) or allowance (negative), which keeps every EN 16931 sum right.
    An allowance and a charge in the same category and rate show as their net amount.
    """
    line_sums: dict[tuple[str, Decimal], Decimal] = {}
    for line in row["lines"]:
        key = (line["vat_category"], Decimal(line["vat_rate"]))
        line_sums[key] = line_sums.get(key, Decimal(0)) + line["net_amount"]
    allowances = charges = Decimal(0)
    for vat in row["vat_breakdown"]:
        category, rate = vat["vat_category"], Decimal(vat["vat_rate"])
        difference = vat["taxable_amount"] - line_sums.get((category, rate), Decimal(0))
        if not difference:
            continue
        entry = _cac(root, "AllowanceCharge")
        _cbc(entry, "ChargeIndicator", "true" if difference > 0 else "false")
        _cbc(entry, "AllowanceChargeReason", "Charge" if difference > 0 else "Discount")
        _amount(entry, "Amount", abs(difference), row["currency"])
        _tax_category(entry, "TaxCategory", category, rate)
        if difference > 0:
            charges += difference
        else:
            allowances -= difference
    return allowances, charges


def _tax_total(root: etree._Element, row: dict[str, Any]) -> None:
    currency = row["currency"]
    tax_total = _cac(root, "TaxTotal")
    _amount(tax_total, "TaxAmount", row["vat_total"], currency)
    for vat in row["vat_breakdown"]:
        subtotal = _cac(tax_total, "TaxSubtotal")
        _amount(subtotal, "TaxableAmount", vat["taxable_amount"], currency)
        _amount(subtotal, "TaxAmount", vat["tax_amount"], currency)
        _tax_category(subtotal, "TaxCategory", vat["vat_category"], vat["vat_rate"])


def _monetary_total(
    root: etree._Element, row: dict[str, Any], line_total: Decimal, allowances: Decimal, charges: Decimal
) -> None:
    currency = row["currency"]
    total = _cac(root, "LegalMonetaryTotal")
    _amount(total, "LineExtensionAmount", line_total, currency)
    _amount(total, "TaxExclusiveAmount", row["net_total"], currency)
    _amount(total, "TaxInclusiveAmount", row["gross_total"], currency)
    if allowances:
        _amount(total, "AllowanceTotalAmount", allowances, currency)
    if charges:
        _amount(total, "ChargeTotalAmount", charges, currency)
    if row["prepaid"]:
        _amount(total, "PrepaidAmount", row["prepaid"], currency)
    if row["rounding"]:
        _amount(total, "PayableRoundingAmount", row["rounding"], currency)
    _amount(total, "PayableAmount", row["payable"], currency)


def _lines(root: etree._Element, row: dict[str, Any], credit_note: bool) -> None:
    line_name, quantity_name = ("CreditNoteLine", "CreditedQuantity") if credit_note else (
        "InvoiceLine", "InvoicedQuantity")
    for line in row["lines"]:
        element = _cac(root, line_name)
        _cbc(element, "ID", line["line_id"] or line["line_no"])
        _cbc(element, quantity_name, _plain(line["quantity"]), unitCode=line["unit_code"] or "C62")
        _amount(element, "LineExtensionAmount", line["net_amount"], row["currency"])
        item = _cac(element, "Item")
        _cbc(item, "Name", line["description"])
        _tax_category(item, "ClassifiedTaxCategory", line["vat_category"], line["vat_rate"])
        _cbc(_cac(element, "Price"), "PriceAmount", _plain(line["unit_price"]), currencyID=row["currency"])


def build_ubl(row: dict[str, Any], *, payment_demand: bool) -> bytes:
    """Return the invoice as UBL 2.1 XML (UTF-8) following Peppol BIS Billing 3.0.

    Raises:
        RenderError: a party lacks its Peppol id or country, a payment demand lacks an account,
            or the invoice has no VAT breakdown.

    Note:
        LineExtensionAmount is the sum of the lines, as rule BR-CO-10 defines it.
    """
    credit_note = row["document_type"] == "credit_note"
    namespace, root_name = (CREDIT_NOTE_NS, "CreditNote") if credit_note else (INVOICE_NS, "Invoice")
    root = etree.Element(f"{{{namespace}}}{root_name}", nsmap={None: namespace, "cac": CAC_NS, "cbc": CBC_NS})
    _cbc(root, "CustomizationID", CUSTOMIZATION_ID)
    _cbc(root, "ProfileID", PROFILE_ID)
    _cbc(root, "ID", row["invoice_number"])
    _cbc(root, "IssueDate", row["issue_date"].isoformat())
    if not credit_note and row["due_date"]:
        _cbc(root, "DueDate", row["due_date"].isoformat())
    type_code = row["type_code"] or ("381" if credit_note else "380")
    _cbc(root, "CreditNoteTypeCode" if credit_note else "InvoiceTypeCode", type_code)
    _cbc(root, "DocumentCurrencyCode", row["currency"])
    # Peppol rule R003 wants a buyer reference or an order reference; the customer number serves.
    _cbc(root, "BuyerReference", row["buyer_reference"] or row["customer_id"])
    _party(root, "AccountingSupplierParty", _seller(row))
    _party(root, "AccountingCustomerParty", _buyer(row))
    if payment_demand:
        _payment_means(root, row)

    if not row["vat_breakdown"]:
        raise RenderError("the invoice has no VAT breakdown in billing.invoice_vat; EN 16931 requires one")
    line_total = sum((line["net_amount"] for line in row["lines"]), Decimal(0))
    allowances, charges = _document_allowances(root, row)
    _tax_total(root, row)
    _monetary_total(root, row, line_total, allowances, charges)
    _lines(root, row, credit_note)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
