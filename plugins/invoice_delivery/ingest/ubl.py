"""Parse Peppol BIS Billing 3.0 UBL invoices and credit notes and store them in the billing schema.

:func:`parse_document` reads one UBL 2.1 ``Invoice`` or ``CreditNote`` file into frozen
dataclasses with ``Decimal`` amounts. :func:`ingest_files` stores parsed documents in
``billing.seller``, ``billing.customer``, ``billing.invoice``, ``billing.invoice_line`` and
``billing.invoice_vat``, one transaction per file, and rejects bad files without stopping the
others.

The parser reads the document as it is. It checks that the elements EN 16931 requires are
present and readable, but it does not check the business rules (sums, decimals, code lists).
Amounts are stored exactly as written, so the validation stage of the pipeline can quarantine
a document that breaks them, with the reason.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import phonenumbers
import psycopg
from babel.core import get_global
from lxml import etree
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

CBC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
NAMESPACES = {"cbc": CBC_NS, "cac": CAC_NS}

# Locale and time zone of a business customer by the country of its postal address.
COUNTRY_LOCALES = {
    "SE": ("sv", "Europe/Stockholm"),
    "NO": ("nb", "Europe/Oslo"),
    "DK": ("da", "Europe/Copenhagen"),
    "FI": ("fi", "Europe/Helsinki"),
}
DEFAULT_LOCALE = "en"

# Swedish Peppol convention: cac:FinancialInstitutionBranch/cbc:ID names the giro system.
BANKGIRO_BRANCH = "SE:BANKGIRO"
PLUSGIRO_BRANCH = "SE:PLUSGIRO"
# The shape of an IBAN (ISO 13616): country, two check digits, 11 to 30 letters or digits.
# The checksum is left to validation, so an IBAN with a wrong check digit is still stored.
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
_XSD_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})?")
_XSD_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # no exponent, NaN or Infinity


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class UblError(ValueError):
    """Raised when a file cannot be read as a UBL invoice or credit note.

    The message names the file, the line where lxml reports one, and the reason, for example
    ``base.xml line 12: missing cbc:IssueDate in Invoice``.
    """

    def __init__(self, file: str, reason: str, line: int | None = None) -> None:
        self.file = file
        self.reason = reason
        self.line = line
        where = f"{file} line {line}" if line else file
        super().__init__(f"{where}: {reason}")


class MalformedXml(UblError):
    """Raised when the file is not well-formed XML."""


class NotUbl(UblError):
    """Raised when the root element is not a UBL 2.1 ``Invoice`` or ``CreditNote``."""


class MissingElement(UblError):
    """Raised when an element that EN 16931 or the billing schema requires is missing or empty."""


class InvalidValue(UblError):
    """Raised when an element contains a value that cannot be read, such as a bad date or amount."""


# ---------------------------------------------------------------------------------------------
# The parsed document
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """Postal address of a party (``cac:PostalAddress``)."""

    street: str | None
    additional_street: str | None
    address_line: str | None
    city: str | None
    postal_code: str | None
    country_subentity: str | None
    country: str

    @property
    def street_lines(self) -> str | None:
        """Return the street, additional street and address line joined with ", "."""
        parts = [part for part in (self.street, self.additional_street, self.address_line) if part]
        return ", ".join(parts) or None

    @property
    def is_deliverable(self) -> bool:
        """Return whether the address has enough for a letter: a street and a city."""
        return bool(self.street and self.city)


@dataclass(frozen=True)
class Party:
    """Seller (``cac:AccountingSupplierParty``) or buyer (``cac:AccountingCustomerParty``).

    ``bankgiro``, ``plusgiro`` and ``iban`` come from ``cac:PaymentMeans`` and are set on the
    seller only.
    """

    name: str  # cac:PartyLegalEntity/cbc:RegistrationName, else the trading name
    trading_name: str | None  # cac:PartyName/cbc:Name
    country: str
    legal_id: str | None  # cac:PartyLegalEntity/cbc:CompanyID, e.g. a Swedish org number
    legal_id_scheme: str | None
    vat_number: str | None
    endpoint_id: str | None  # "scheme:value", e.g. "0007:5560000000"
    address: Address
    email: str | None = None
    phone: str | None = None
    bankgiro: str | None = None
    plusgiro: str | None = None
    iban: str | None = None


@dataclass(frozen=True)
class PaymentAccount:
    """Account the payment goes to (``cac:PaymentMeans/cac:PayeeFinancialAccount``)."""

    account_id: str  # as printed in the document
    branch_id: str | None  # BIC, or SE:BANKGIRO / SE:PLUSGIRO
    means_code: str | None  # UNCL4461, e.g. 30 credit transfer, 58 SEPA credit transfer


@dataclass(frozen=True)
class DocumentLine:
    """Invoice line or credit note line."""

    line_id: str
    name: str  # cac:Item/cbc:Name, else cac:Item/cbc:Description
    description: str | None
    quantity: Decimal
    unit_code: str | None  # UN/ECE Recommendation 20, e.g. C62, KWH, DAY
    unit_price: Decimal  # net price for base_quantity units
    base_quantity: Decimal
    net_amount: Decimal
    vat_category: str  # UNCL5305
    vat_rate: Decimal  # percent

    @property
    def price_per_unit(self) -> Decimal:
        """Return the net price of one unit of quantity.

        The value is exact when the base quantity is 1. Otherwise the division keeps 28
        significant digits, the default precision of ``decimal``.
        """
        if self.base_quantity == 1:
            return self.unit_price
        return self.unit_price / self.base_quantity


@dataclass(frozen=True)
class VatSubtotal:
    """One row of the VAT breakdown (``cac:TaxTotal/cac:TaxSubtotal``)."""

    category: str
    rate: Decimal
    taxable_amount: Decimal
    tax_amount: Decimal
    exemption_reason: str | None = None


@dataclass(frozen=True)
class MonetaryTotal:
    """Document totals (``cac:LegalMonetaryTotal``). Optional amounts default to zero."""

    line_extension: Decimal
    tax_exclusive: Decimal
    tax_inclusive: Decimal
    payable: Decimal
    allowance_total: Decimal = Decimal(0)
    charge_total: Decimal = Decimal(0)
    prepaid: Decimal = Decimal(0)
    rounding: Decimal = Decimal(0)  # cbc:PayableRoundingAmount


@dataclass(frozen=True)
class UblDocument:
    """Parsed UBL invoice or credit note."""

    file_name: str
    document_type: str  # "invoice" or "credit_note", from the root element
    type_code: str  # UNCL1001 from cbc:InvoiceTypeCode or cbc:CreditNoteTypeCode
    invoice_number: str
    issue_date: date
    due_date: date | None
    currency: str
    seller: Party
    buyer: Party
    lines: tuple[DocumentLine, ...]
    vat_total: Decimal  # cac:TaxTotal/cbc:TaxAmount in the document currency
    vat_breakdown: tuple[VatSubtotal, ...]
    totals: MonetaryTotal
    payment_id: str | None  # cac:PaymentMeans/cbc:PaymentID, e.g. a Swedish OCR number
    payment_accounts: tuple[PaymentAccount, ...]
    buyer_reference: str | None
    note: str | None
    payment_terms: str | None
    preceding_invoice: str | None  # cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID
    customization_id: str | None

    @property
    def payment_account(self) -> str | None:
        """Return the first payee account as printed in the document."""
        return self.payment_accounts[0].account_id if self.payment_accounts else None


@dataclass(frozen=True)
class _DocumentKind:
    root_name: str
    document_type: str
    type_code_path: str
    line_path: str
    quantity_path: str


_KINDS = {
    f"{{{INVOICE_NS}}}Invoice": _DocumentKind(
        "Invoice", "invoice", "cbc:InvoiceTypeCode", "cac:InvoiceLine", "cbc:InvoicedQuantity"
    ),
    f"{{{CREDIT_NOTE_NS}}}CreditNote": _DocumentKind(
        "CreditNote", "credit_note", "cbc:CreditNoteTypeCode", "cac:CreditNoteLine", "cbc:CreditedQuantity"
    ),
}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def parse_document(path: Path) -> UblDocument:
    """Parse a Peppol BIS Billing 3.0 UBL ``Invoice`` or ``CreditNote`` file.

    Raises:
        MalformedXml: the file is not well-formed XML.
        NotUbl: the root element is not a UBL 2.1 Invoice or CreditNote.
        MissingElement: a required element is missing or empty.
        InvalidValue: a date, amount or number cannot be read.
        OSError: the file cannot be read.
    """
    path = Path(path)
    root = _read_root(path)
    kind = _KINDS.get(root.tag)
    if kind is None:
        raise NotUbl(
            path.name,
            f"root element is {root.tag}, not a UBL 2.1 Invoice or CreditNote; expected "
            f"{{{INVOICE_NS}}}Invoice or {{{CREDIT_NOTE_NS}}}CreditNote",
            root.sourceline,
        )
    return _parse_root(_Reader(path.name), root, kind)


def _read_root(path: Path) -> etree._Element:
    # Files come from outside: no DTDs, no entity expansion, no network access.
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
    data = path.read_bytes()
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        # libxml2 ends its message with ", line L, column C", so move the line to the front.
        message = re.sub(r", line \d+, column \d+$", "", exc.msg or "parse error")
        column = f" (column {exc.position[1]})" if exc.position and exc.position[1] else ""
        raise MalformedXml(path.name, f"not well-formed XML: {message}{column}", exc.lineno or None) from exc


def _label(element: etree._Element) -> str:
    """Return the element's name as UBL documentation writes it: ``cac:Item`` or ``Invoice``."""
    qname = etree.QName(element)
    prefix = {CBC_NS: "cbc:", CAC_NS: "cac:"}.get(qname.namespace, "")
    return prefix + qname.localname


class _Reader:
    """Namespaced XPath look-ups that raise :class:`UblError` naming the file and line."""

    def __init__(self, file_name: str) -> None:
        self.file = file_name

    def nodes(self, element: etree._Element, path: str) -> list[etree._Element]:
        return element.xpath(path, namespaces=NAMESPACES)

    def node(self, element: etree._Element, path: str) -> etree._Element | None:
        found = self.nodes(element, path)
        return found[0] if found else None

    def required_node(self, element: etree._Element, path: str) -> etree._Element:
        node = self.node(element, path)
        if node is None:
            raise MissingElement(self.file, f"missing {path} in {_label(element)}", element.sourceline)
        return node

    def text(self, element: etree._Element, path: str, *, collapse: bool = False) -> str | None:
        """Return the stripped text at ``path``, or None when the element is absent or empty.

        ``collapse`` also joins internal runs of whitespace, for names and descriptions that
        the sender wrapped over several lines.
        """
        node = self.node(element, path)
        return _clean(node.text, collapse) if node is not None else None

    def required_text(self, element: etree._Element, path: str, *, collapse: bool = False) -> str:
        node = self.required_node(element, path)
        value = _clean(node.text, collapse)
        if value is None:
            raise MissingElement(self.file, f"empty {path} in {_label(element)}", node.sourceline)
        return value

    def decimal(self, element: etree._Element, path: str, *, required: bool = True) -> Decimal | None:
        """Read an xsd:decimal exactly as written, or return None when optional and absent."""
        if not required and self.text(element, path) is None:
            return None
        raw = self.required_text(element, path)
        if not _XSD_DECIMAL.fullmatch(raw):
            raise InvalidValue(
                self.file,
                f"invalid number {raw!r} in {path}; expected a decimal such as 1234.50",
                self.required_node(element, path).sourceline,
            )
        return Decimal(raw)

    def amount(self, element: etree._Element, path: str) -> Decimal:
        return self.decimal(element, path)

    def optional_amount(self, element: etree._Element, path: str) -> Decimal:
        value = self.decimal(element, path, required=False)
        return Decimal(0) if value is None else value

    def date(self, element: etree._Element, path: str, *, required: bool = True) -> date | None:
        """Read an xsd:date and drop a time zone suffix such as ``Z`` or ``+01:00``."""
        if not required and self.text(element, path) is None:
            return None
        raw = self.required_text(element, path)
        match = _XSD_DATE.fullmatch(raw)
        try:
            if match:
                return date.fromisoformat(match.group(1))
        except ValueError:
            pass
        raise InvalidValue(
            self.file,
            f"invalid date {raw!r} in {path}; expected YYYY-MM-DD",
            self.required_node(element, path).sourceline,
        )


def _clean(text: str | None, collapse: bool = False) -> str | None:
    if text is None:
        return None
    value = " ".join(text.split()) if collapse else text.strip()
    return value or None


def _parse_root(reader: _Reader, root: etree._Element, kind: _DocumentKind) -> UblDocument:
    invoice_number = reader.required_text(root, "cbc:ID")
    issue_date = reader.date(root, "cbc:IssueDate")
    type_code = reader.required_text(root, kind.type_code_path)
    currency = reader.required_text(root, "cbc:DocumentCurrencyCode")

    accounts = tuple(_parse_payment_accounts(reader, root))
    seller = _parse_party(reader, reader.required_node(root, "cac:AccountingSupplierParty/cac:Party"), accounts)
    buyer = _parse_party(reader, reader.required_node(root, "cac:AccountingCustomerParty/cac:Party"), ())
    vat_total, vat_breakdown = _parse_tax_total(reader, root, currency)
    totals = _parse_monetary_total(reader, reader.required_node(root, "cac:LegalMonetaryTotal"))
    lines = _parse_lines(reader, root, kind)

    notes = [note for note in (_clean(node.text) for node in reader.nodes(root, "cbc:Note")) if note]
    return UblDocument(
        file_name=reader.file,
        document_type=kind.document_type,
        type_code=type_code,
        invoice_number=invoice_number,
        issue_date=issue_date,
        due_date=_parse_due_date(reader, root),
        currency=currency,
        seller=seller,
        buyer=buyer,
        lines=lines,
        vat_total=vat_total,
        vat_breakdown=vat_breakdown,
        totals=totals,
        payment_id=reader.text(root, "cac:PaymentMeans/cbc:PaymentID"),
        payment_accounts=accounts,
        buyer_reference=reader.text(root, "cbc:BuyerReference"),
        note="\n".join(notes) or None,
        payment_terms=_clean(reader.text(root, "cac:PaymentTerms/cbc:Note")) or None,
        preceding_invoice=reader.text(root, "cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID"),
        customization_id=reader.text(root, "cbc:CustomizationID"),
    )


def _parse_due_date(reader: _Reader, root: etree._Element) -> date | None:
    """Read the due date: ``cbc:DueDate`` on an Invoice, else the payment means or terms.

    A UBL 2.1 CreditNote has no ``cbc:DueDate``, so a credit note that states a due date puts
    it in ``cac:PaymentMeans/cbc:PaymentDueDate``. Some senders use ``cac:PaymentTerms``.
    """
    for path in ("cbc:DueDate", "cac:PaymentMeans/cbc:PaymentDueDate", "cac:PaymentTerms/cbc:PaymentDueDate"):
        value = reader.date(root, path, required=False)
        if value is not None:
            return value
    return None


def _parse_payment_accounts(reader: _Reader, root: etree._Element) -> Iterable[PaymentAccount]:
    for means in reader.nodes(root, "cac:PaymentMeans"):
        account_id = reader.text(means, "cac:PayeeFinancialAccount/cbc:ID")
        if account_id is None:
            continue
        yield PaymentAccount(
            account_id=account_id,
            branch_id=reader.text(means, "cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID"),
            means_code=reader.text(means, "cbc:PaymentMeansCode"),
        )


def _classify_accounts(accounts: Iterable[PaymentAccount]) -> dict[str, str]:
    """Sort payee accounts into bankgiro, plusgiro and iban. The first account of each kind wins."""
    found: dict[str, str] = {}
    for account in accounts:
        branch = (account.branch_id or "").upper()
        compact = re.sub(r"\s", "", account.account_id).upper()
        if branch == BANKGIRO_BRANCH:
            found.setdefault("bankgiro", account.account_id)
        elif branch == PLUSGIRO_BRANCH:
            found.setdefault("plusgiro", account.account_id)
        elif _IBAN_SHAPE.fullmatch(compact):
            found.setdefault("iban", compact)
    return found


def _parse_party(reader: _Reader, party: etree._Element, accounts: tuple[PaymentAccount, ...]) -> Party:
    legal_name = reader.text(party, "cac:PartyLegalEntity/cbc:RegistrationName", collapse=True)
    trading_name = reader.text(party, "cac:PartyName/cbc:Name", collapse=True)
    if legal_name is None and trading_name is None:
        raise MissingElement(
            reader.file,
            f"missing cac:PartyLegalEntity/cbc:RegistrationName in {_label(party.getparent())}/cac:Party",
            party.sourceline,
        )
    address = _parse_address(reader, reader.required_node(party, "cac:PostalAddress"))
    endpoint = reader.node(party, "cbc:EndpointID")
    legal_id = reader.node(party, "cac:PartyLegalEntity/cbc:CompanyID")
    return Party(
        name=legal_name or trading_name,
        trading_name=trading_name,
        country=address.country,
        legal_id=_clean(legal_id.text) if legal_id is not None else None,
        legal_id_scheme=legal_id.get("schemeID") if legal_id is not None else None,
        vat_number=reader.text(party, "cac:PartyTaxScheme[cac:TaxScheme/cbc:ID='VAT']/cbc:CompanyID"),
        endpoint_id=_scheme_value(endpoint),
        address=address,
        email=reader.text(party, "cac:Contact/cbc:ElectronicMail"),
        phone=reader.text(party, "cac:Contact/cbc:Telephone"),
        **_classify_accounts(accounts),
    )


def _scheme_value(node: etree._Element | None) -> str | None:
    value = _clean(node.text) if node is not None else None
    if value is None:
        return None
    scheme = _clean(node.get("schemeID"))
    return f"{scheme}:{value}" if scheme else value


def _parse_address(reader: _Reader, address: etree._Element) -> Address:
    return Address(
        street=reader.text(address, "cbc:StreetName", collapse=True),
        additional_street=reader.text(address, "cbc:AdditionalStreetName", collapse=True),
        address_line=reader.text(address, "cac:AddressLine/cbc:Line", collapse=True),
        city=reader.text(address, "cbc:CityName", collapse=True),
        postal_code=reader.text(address, "cbc:PostalZone"),
        country_subentity=reader.text(address, "cbc:CountrySubentity", collapse=True),
        country=reader.required_text(address, "cac:Country/cbc:IdentificationCode").upper(),
    )


def _parse_tax_total(reader: _Reader, root: etree._Element, currency: str) -> tuple[Decimal, tuple[VatSubtotal, ...]]:
    """Read the VAT total and breakdown in the document currency.

    A document may carry a second ``cac:TaxTotal`` in the VAT accounting currency (BT-111),
    without subtotals. That one is skipped.
    """
    tax_totals = reader.nodes(root, "cac:TaxTotal")
    if not tax_totals:
        raise MissingElement(reader.file, f"missing cac:TaxTotal in {_label(root)}", root.sourceline)
    chosen = next(
        (node for node in tax_totals if _currency(reader.required_node(node, "cbc:TaxAmount")) in (None, currency)),
        None,
    )
    if chosen is None:
        raise MissingElement(
            reader.file,
            f"missing cac:TaxTotal in the document currency {currency} in {_label(root)}",
            root.sourceline,
        )
    subtotal_nodes = reader.nodes(chosen, "cac:TaxSubtotal")
    if not subtotal_nodes:
        raise MissingElement(reader.file, "missing cac:TaxSubtotal in cac:TaxTotal", chosen.sourceline)

    subtotals: list[VatSubtotal] = []
    for node in subtotal_nodes:
        category = reader.required_node(node, "cac:TaxCategory")
        subtotal = VatSubtotal(
            category=reader.required_text(category, "cbc:ID"),
            rate=reader.decimal(category, "cbc:Percent", required=False) or Decimal(0),
            taxable_amount=reader.amount(node, "cbc:TaxableAmount"),
            tax_amount=reader.amount(node, "cbc:TaxAmount"),
            exemption_reason=reader.text(category, "cbc:TaxExemptionReason", collapse=True)
            or reader.text(category, "cbc:TaxExemptionReasonCode"),
        )
        if any((s.category, s.rate) == (subtotal.category, subtotal.rate) for s in subtotals):
            raise InvalidValue(
                reader.file,
                f"second cac:TaxSubtotal for VAT category {subtotal.category} at {subtotal.rate} %; "
                f"the breakdown must have one subtotal per category and rate",
                node.sourceline,
            )
        subtotals.append(subtotal)
    return reader.amount(chosen, "cbc:TaxAmount"), tuple(subtotals)


def _currency(amount: etree._Element) -> str | None:
    return amount.get("currencyID")


def _parse_monetary_total(reader: _Reader, total: etree._Element) -> MonetaryTotal:
    return MonetaryTotal(
        line_extension=reader.amount(total, "cbc:LineExtensionAmount"),
        tax_exclusive=reader.amount(total, "cbc:TaxExclusiveAmount"),
        tax_inclusive=reader.amount(total, "cbc:TaxInclusiveAmount"),
        payable=reader.amount(total, "cbc:PayableAmount"),
        allowance_total=reader.optional_amount(total, "cbc:AllowanceTotalAmount"),
        charge_total=reader.optional_amount(total, "cbc:ChargeTotalAmount"),
        prepaid=reader.optional_amount(total, "cbc:PrepaidAmount"),
        rounding=reader.optional_amount(total, "cbc:PayableRoundingAmount"),
    )


def _parse_lines(reader: _Reader, root: etree._Element, kind: _DocumentKind) -> tuple[DocumentLine, ...]:
    nodes = reader.nodes(root, kind.line_path)
    if not nodes:
        raise MissingElement(reader.file, f"missing {kind.line_path} in {kind.root_name}", root.sourceline)
    return tuple(_parse_line(reader, node, kind) for node in nodes)


def _parse_line(reader: _Reader, line: etree._Element, kind: _DocumentKind) -> DocumentLine:
    item = reader.required_node(line, "cac:Item")
    name = reader.text(item, "cbc:Name", collapse=True)
    description = reader.text(item, "cbc:Description", collapse=True)
    if name is None and description is None:
        raise MissingElement(reader.file, "missing cbc:Name in cac:Item", item.sourceline)
    price = reader.required_node(line, "cac:Price")
    base_quantity = reader.decimal(price, "cbc:BaseQuantity", required=False)
    if base_quantity is not None and base_quantity <= 0:
        raise InvalidValue(reader.file, f"cbc:BaseQuantity is {base_quantity}; it must be above zero", price.sourceline)
    tax_category = reader.required_node(item, "cac:ClassifiedTaxCategory")
    return DocumentLine(
        line_id=reader.required_text(line, "cbc:ID"),
        name=name or description,
        description=description,
        quantity=reader.decimal(line, kind.quantity_path),
        unit_code=reader.required_node(line, kind.quantity_path).get("unitCode"),
        unit_price=reader.decimal(price, "cbc:PriceAmount"),
        base_quantity=base_quantity or Decimal(1),
        net_amount=reader.amount(line, "cbc:LineExtensionAmount"),
        vat_category=reader.required_text(tax_category, "cbc:ID"),
        vat_rate=reader.decimal(tax_category, "cbc:Percent", required=False) or Decimal(0),
    )


# ---------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectedFile:
    """File that ingest rejected, with the reason and where it was moved, if anywhere."""

    file: str
    reason: str
    moved_to: Path | None = None


@dataclass
class IngestReport:
    """Outcome counts of one ingest call, with the ids of the invoices inserted or updated."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RejectedFile] = field(default_factory=list)
    invoice_ids: list[int] = field(default_factory=list)

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)


# Invoice columns that make up the stored content. ready_at and source_file are left out, so
# the same document released again later, or under another file name, counts as unchanged.
_CONTENT_COLUMNS = (
    "seller_id", "customer_id", "invoice_number", "document_type", "type_code", "issue_date", "due_date",
    "currency", "line_net_total", "allowance_total", "charge_total", "net_total", "vat_total", "gross_total",
    "prepaid", "rounding", "payable", "ocr_reference", "buyer_reference", "payment_account", "note",
    "payment_terms",
)  # fmt: skip

_LINE_COLUMNS = (
    "line_no", "line_id", "description", "quantity", "unit_code", "unit_price", "net_amount",
    "vat_category", "vat_rate",
)  # fmt: skip
_VAT_COLUMNS = ("vat_category", "vat_rate", "taxable_amount", "tax_amount")


def ingest_files(
    conn: psycopg.Connection,
    paths: Iterable[Path],
    *,
    ready_at: datetime,
    rejected_dir: Path | None = None,
) -> IngestReport:
    """Parse UBL files and upsert them into the billing schema, one transaction per file.

    A new document is inserted with ``ready_at``. A document whose key
    ``seller_id:document_type:invoice_number`` exists is compared with the stored invoice, lines
    and VAT rows. When nothing differs, nothing is written and ``updated_at`` keeps its value.
    Otherwise the invoice is updated and its lines and VAT rows are replaced, as a correction.
    The seller and customer rows are written only together with a new or corrected invoice.

    A file that cannot be parsed or stored is recorded in the report and, when ``rejected_dir``
    is given, moved there with ``<name>.reason.txt`` next to it. Files are never moved or
    changed otherwise.

    Note:
        Each file runs in its own transaction, or in a savepoint when the caller has a
        transaction open, in which case the caller commits.
        A corrected invoice keeps the ``ready_at`` of its first release. Its ``updated_at``
        shows the correction.
    """
    if ready_at.tzinfo is None:
        raise ValueError(f"ready_at {ready_at.isoformat()} has no time zone; pass an aware datetime")
    report = IngestReport()
    for path in map(Path, paths):
        try:
            document = parse_document(path)
            outcome, invoice_id = _store_document(conn, _build_rows(document, ready_at))
        except UblError as exc:
            _reject(report, path, str(exc), rejected_dir)
            continue
        except OSError as exc:
            _reject(report, path, f"{path.name}: cannot read the file: {exc.strerror or exc}", rejected_dir)
            continue
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            reason = f"{path.name}: the database rejected the invoice: {exc.diag.message_primary or exc}"
            _reject(report, path, reason, rejected_dir)
            continue

        if outcome == "inserted":
            report.inserted += 1
        elif outcome == "updated":
            report.updated += 1
        else:
            report.unchanged += 1
        if outcome != "unchanged":
            report.invoice_ids.append(invoice_id)
        log.info(
            "UBL file %s: invoice %s %s (invoice_id %s)",
            path.name,
            document.invoice_number,
            outcome,
            invoice_id,
        )

    log.info(
        "UBL ingest done: %d inserted, %d updated, %d unchanged, %d rejected",
        report.inserted,
        report.updated,
        report.unchanged,
        report.rejected_count,
    )
    return report


def ingest_directory(conn: psycopg.Connection, inbox: Path, **kwargs: Any) -> IngestReport:
    """Ingest every ``*.xml`` file in ``inbox`` in name order, as :func:`ingest_files` does."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise NotADirectoryError(f"UBL inbox {inbox} is not a folder; create it or pass the folder of the files")
    return ingest_files(conn, sorted(inbox.glob("*.xml")), **kwargs)


def _reject(report: IngestReport, path: Path, reason: str, rejected_dir: Path | None) -> None:
    moved_to = None
    if rejected_dir is not None:
        try:
            moved_to = _move_rejected(path, reason, Path(rejected_dir))
        except OSError as exc:
            log.error("Could not move rejected UBL file %s to %s: %s", path.name, rejected_dir, exc)
    report.rejected.append(RejectedFile(path.name, reason, moved_to))
    log.warning("UBL file rejected: %s", reason)


def _move_rejected(path: Path, reason: str, rejected_dir: Path) -> Path:
    rejected_dir.mkdir(parents=True, exist_ok=True)
    target = rejected_dir / path.name
    shutil.move(path, target)
    (rejected_dir / f"{path.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------
# From document to rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    seller: dict[str, Any]
    customer: dict[str, Any]
    invoice: dict[str, Any]
    lines: list[tuple]
    vat: list[tuple]

    def content(self) -> tuple:
        return tuple(self.invoice[column] for column in _CONTENT_COLUMNS), self.lines, self.vat


def _seller_id(document: UblDocument) -> str:
    seller = document.seller
    if seller.endpoint_id:
        return seller.endpoint_id
    if seller.legal_id and seller.legal_id_scheme:
        return f"{seller.legal_id_scheme}:{seller.legal_id}"
    if seller.vat_number:
        return f"VAT:{seller.vat_number}"
    raise MissingElement(
        document.file_name,
        "missing cbc:EndpointID in cac:AccountingSupplierParty/cac:Party; the seller needs an endpoint id, "
        "a legal id with a scheme or a VAT number",
    )


def _customer_id(document: UblDocument) -> str:
    buyer = document.buyer
    if buyer.endpoint_id:
        return f"peppol:{buyer.endpoint_id}"
    if buyer.legal_id:
        scheme = f"{buyer.legal_id_scheme}:" if buyer.legal_id_scheme else ""
        return f"legal:{scheme}{buyer.legal_id}"
    raise MissingElement(
        document.file_name,
        "missing cbc:EndpointID in cac:AccountingCustomerParty/cac:Party; the buyer needs an endpoint id "
        "or a cac:PartyLegalEntity/cbc:CompanyID",
    )


def _locale(country: str) -> tuple[str, str]:
    """Return (locale, time zone) for a customer in ``country``, ISO 3166 alpha-2."""
    if country in COUNTRY_LOCALES:
        return COUNTRY_LOCALES[country]
    zones = get_global("territory_zones").get(country) or ["UTC"]
    return DEFAULT_LOCALE, zones[0]


def _build_rows(document: UblDocument, ready_at: datetime) -> _Rows:
    seller_id = _seller_id(document)
    customer_id = _customer_id(document)
    return _Rows(
        seller=_seller_row(seller_id, document.seller),
        customer=_customer_row(customer_id, document.buyer),
        invoice=_invoice_row(document, seller_id, customer_id, ready_at),
        lines=[
            (
                number,
                line.line_id,
                line.name,
                line.quantity,
                line.unit_code,
                line.price_per_unit,
                line.net_amount,
                line.vat_category,
                line.vat_rate,
            )
            for number, line in enumerate(document.lines, start=1)
        ],
        vat=sorted((s.category, s.rate, s.taxable_amount, s.tax_amount) for s in document.vat_breakdown),
    )


def _seller_row(seller_id: str, seller: Party) -> dict[str, Any]:
    return {
        "seller_id": seller_id,
        "name": seller.name,
        "country": seller.country,
        "org_number": seller.legal_id,
        "vat_number": seller.vat_number,
        "peppol_id": seller.endpoint_id,
        "bankgiro": seller.bankgiro,
        "plusgiro": seller.plusgiro,
        "iban": seller.iban,
        "street": seller.address.street_lines,
        "postal_code": seller.address.postal_code,
        "city": seller.address.city,
    }


def _customer_row(customer_id: str, buyer: Party) -> dict[str, Any]:
    """Map the buyer to a business customer who prefers e-invoice, then e-mail, then paper.

    Consent is taken for every preferred channel the document gives a contact point for.
    """
    preferences = ["einvoice", "email", "paper"] if buyer.endpoint_id else ["email", "paper"]
    reachable = {
        "einvoice": bool(buyer.endpoint_id),
        "email": bool(buyer.email),
        "paper": buyer.address.is_deliverable,
    }
    locale, time_zone = _locale(buyer.country)
    return {
        "customer_id": customer_id,
        "kind": "business",
        "name": buyer.name,
        "org_number": buyer.legal_id,
        "vat_number": buyer.vat_number,
        "peppol_id": buyer.endpoint_id,
        "locale": locale,
        "time_zone": time_zone,
        "email": buyer.email,
        "mobile": buyer.phone if _is_mobile(buyer.phone, buyer.country) else None,
        "street": buyer.address.street_lines,
        "postal_code": buyer.address.postal_code,
        "city": buyer.address.city,
        "country": buyer.country,
        "channel_preferences": preferences,
        "consents": [channel for channel in preferences if reachable[channel]],
    }


def _is_mobile(phone: str | None, country: str) -> bool:
    """Return whether ``phone`` is a mobile number, read as dialled from ``country``.

    A company's contact telephone is usually a landline, and billing.customer.mobile is for SMS,
    so any other number is left out of the customer row. UblDocument still carries it.
    """
    if not phone:
        return False
    try:
        number = phonenumbers.parse(phone, country)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def _invoice_row(document: UblDocument, seller_id: str, customer_id: str, ready_at: datetime) -> dict[str, Any]:
    totals = document.totals
    return {
        "source": "ubl",
        "source_key": f"{seller_id}:{document.document_type}:{document.invoice_number}",
        "source_file": document.file_name,
        "seller_id": seller_id,
        "customer_id": customer_id,
        "invoice_number": document.invoice_number,
        "document_type": document.document_type,
        "type_code": document.type_code,
        "issue_date": document.issue_date,
        "due_date": document.due_date,
        "currency": document.currency,
        "line_net_total": totals.line_extension,
        "allowance_total": totals.allowance_total,
        "charge_total": totals.charge_total,
        "net_total": totals.tax_exclusive,
        "vat_total": document.vat_total,
        "gross_total": totals.tax_inclusive,
        "prepaid": totals.prepaid,
        "rounding": totals.rounding,
        "payable": totals.payable,
        "ocr_reference": document.payment_id,
        "buyer_reference": document.buyer_reference,
        "payment_account": document.payment_account,
        "note": document.note,
        "payment_terms": document.payment_terms,
        "ready_at": ready_at,
    }


# ---------------------------------------------------------------------------------------------
# Database writes
# ---------------------------------------------------------------------------------------------


def _store_document(conn: psycopg.Connection, rows: _Rows) -> tuple[str, int]:
    """Insert, correct or skip one document, and return the outcome and the invoice id."""
    source_key = rows.invoice["source_key"]
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # Serialise writers of the same document so two ingests cannot both insert it.
        lock_key = f"billing.invoice:ubl:{source_key}"
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
        cur.execute(
            f"SELECT invoice_id, {', '.join(_CONTENT_COLUMNS)} FROM billing.invoice"
            " WHERE source = 'ubl' AND source_key = %s FOR UPDATE",
            (source_key,),
        )
        existing = cur.fetchone()
        if existing is not None and _stored_content(cur, existing) == rows.content():
            return "unchanged", existing["invoice_id"]

        _upsert(cur, "billing.seller", "seller_id", rows.seller)
        _upsert(cur, "billing.customer", "customer_id", rows.customer, touch="updated_at")
        if existing is None:
            invoice_id = _insert_invoice(cur, rows.invoice)
            outcome = "inserted"
        else:
            invoice_id = existing["invoice_id"]
            _update_invoice(cur, invoice_id, rows.invoice)
            outcome = "updated"
        _insert_children(cur, invoice_id, rows)
    return outcome, invoice_id


def _stored_content(cur: psycopg.Cursor, existing: dict[str, Any]) -> tuple:
    invoice_id = existing["invoice_id"]
    cur.execute(
        f"SELECT {', '.join(_LINE_COLUMNS)} FROM billing.invoice_line WHERE invoice_id = %s ORDER BY line_no",
        (invoice_id,),
    )
    lines = [tuple(row.values()) for row in cur.fetchall()]
    cur.execute(
        f"SELECT {', '.join(_VAT_COLUMNS)} FROM billing.invoice_vat WHERE invoice_id = %s"
        " ORDER BY vat_category, vat_rate",
        (invoice_id,),
    )
    vat = sorted(tuple(row.values()) for row in cur.fetchall())
    return tuple(existing[column] for column in _CONTENT_COLUMNS), lines, vat


def _upsert(cur: psycopg.Cursor, table: str, key: str, row: dict[str, Any], touch: str | None = None) -> None:
    """Insert ``row`` or update the existing one, writing only when a column differs."""
    columns = list(row)
    others = [column for column in columns if column != key]
    assignments = [f"{column} = EXCLUDED.{column}" for column in others]
    if touch:
        assignments.append(f"{touch} = now()")
    cur.execute(
        f"INSERT INTO {table} AS t ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        f" ON CONFLICT ({key}) DO UPDATE SET {', '.join(assignments)}"
        f" WHERE ({', '.join(f't.{c}' for c in others)}) IS DISTINCT FROM"
        f" ({', '.join(f'EXCLUDED.{c}' for c in others)})",
        list(row.values()),
    )


def _insert_invoice(cur: psycopg.Cursor, invoice: dict[str, Any]) -> int:
    cur.execute(
        f"INSERT INTO billing.invoice ({', '.join(invoice)}) VALUES ({', '.join(['%s'] * len(invoice))})"
        " RETURNING invoice_id",
        list(invoice.values()),
    )
    return cur.fetchone()["invoice_id"]


def _update_invoice(cur: psycopg.Cursor, invoice_id: int, invoice: dict[str, Any]) -> None:
    columns = [column for column in invoice if column not in ("source", "source_key", "ready_at")]
    cur.execute(
        f"UPDATE billing.invoice SET {', '.join(f'{c} = %s' for c in columns)}, updated_at = now()"
        " WHERE invoice_id = %s",
        [invoice[column] for column in columns] + [invoice_id],
    )
    cur.execute("DELETE FROM billing.invoice_line WHERE invoice_id = %s", (invoice_id,))
    cur.execute("DELETE FROM billing.invoice_vat WHERE invoice_id = %s", (invoice_id,))


def _insert_children(cur: psycopg.Cursor, invoice_id: int, rows: _Rows) -> None:
    cur.executemany(
        f"INSERT INTO billing.invoice_line (invoice_id, {', '.join(_LINE_COLUMNS)})"
        f" VALUES (%s, {', '.join(['%s'] * len(_LINE_COLUMNS))})",
        [(invoice_id, *line) for line in rows.lines],
    )
    cur.executemany(
        f"INSERT INTO billing.invoice_vat (invoice_id, {', '.join(_VAT_COLUMNS)})"
        f" VALUES (%s, {', '.join(['%s'] * len(_VAT_COLUMNS))})",
        [(invoice_id, *vat) for vat in rows.vat],
    )
