"""Lay out an invoice PDF from the text a per-locale template renders.

The template (``pdf/invoice.<locale>.txt.j2``) decides every word; this module decides where it
goes. Its output is a list of sections, each opened by a line ``[name]``; a row of a table is
cells separated by ``|``. See :data:`SECTIONS` for the names.

The recipient address sits in the window of DIN 5008 form B: a field 85 mm wide and 45 mm high,
20 mm from the left edge and 45 mm from the top. Its upper 17.7 mm carry the return address and
its lower 27.3 mm the address, which fits C5 and DL window envelopes. Only paper copies print the
return address.

Text is set in the standard Helvetica fonts with Windows-1252 encoding, which holds the letters of
Swedish, Norwegian, Danish and Finnish and the euro sign; other characters lose their accents or
become ``?`` (see :mod:`invoice_delivery.rendering.pdf_writer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from invoice_delivery.rendering.pdf_writer import GreyImage, PdfDocument

SECTIONS = (
    "title", "seller", "return_address", "recipient", "details", "line_header", "lines", "totals",
    "amount_due", "payment", "qr_caption", "footer",
)  # fmt: skip
_SECTION_LINE = re.compile(r"\[(" + "|".join(SECTIONS) + r")\]")

# Page geometry in millimetres (A4 portrait).
PAGE_HEIGHT = 297.0
LEFT, RIGHT = 20.0, 190.0
HEADER_WIDTH = 110.0  # the seller's name wraps before it reaches the title on the right
WINDOW_TOP = 45.0  # DIN 5008 form B address field
RETURN_ZONE_HEIGHT = 17.7
ADDRESS_WIDTH = 85.0
DETAILS_LEFT = 118.0
TABLE_TOP = 102.0
PAGE_BOTTOM = 262.0  # lower edge of the body; the footer goes below
QR_SIZE = 32.0
# Right edges of the numeric columns of the lines table: quantity, unit price, VAT, amount.
COLUMN_RIGHTS = (118.0, 145.0, 162.0, RIGHT)
DESCRIPTION_WIDTH = 68.0


class PdfLayoutError(ValueError):
    """Raised when the rendered PDF text lacks a section or a row has the wrong number of cells."""


@dataclass
class PdfText:
    """The wording of one invoice PDF, section by section."""

    title: str = ""
    seller: list[str] = field(default_factory=list)
    return_address: str = ""
    recipient: list[str] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)
    line_header: tuple[str, ...] = ()
    lines: list[tuple[str, ...]] = field(default_factory=list)
    totals: list[tuple[str, str]] = field(default_factory=list)
    amount_due: tuple[str, str] = ("", "")
    payment: list[str] = field(default_factory=list)
    qr_caption: str = ""
    footer: str = ""


def parse_sections(text: str) -> PdfText:
    """Split the rendered template into a :class:`PdfText`; raise PdfLayoutError on a malformed one."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _SECTION_LINE.fullmatch(line.strip())
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None and line.strip():
            current.append(line.strip())
    missing = [name for name in SECTIONS if name not in sections]
    if missing:
        raise PdfLayoutError(f"PDF template output lacks the sections {missing}; add a [name] line for each")
    return PdfText(
        title=" ".join(sections["title"]),
        seller=sections["seller"],
        return_address=" ".join(sections["return_address"]),
        recipient=sections["recipient"],
        details=[_cells(row, 2, "details") for row in sections["details"]],
        line_header=_cells(" ".join(sections["line_header"]), 5, "line_header"),
        lines=[_cells(row, 5, "lines") for row in sections["lines"]],
        totals=[_cells(row, 2, "totals") for row in sections["totals"]],
        amount_due=_cells(" ".join(sections["amount_due"]), 2, "amount_due"),
        payment=sections["payment"],
        qr_caption=" ".join(sections["qr_caption"]),
        footer=" ".join(sections["footer"]),
    )


def _cells(row: str, count: int, section: str) -> tuple[str, ...]:
    # Split from the right: only the first cell (a description or label) may contain "|" itself.
    cells = tuple(cell.strip() for cell in row.rsplit("|", count - 1))
    if len(cells) != count:
        raise PdfLayoutError(f"row {row!r} in section [{section}] has {len(cells)} cells; expected {count}")
    return cells


class _InvoicePage:
    """Write one invoice onto a PDF document, page by page."""

    def __init__(self, pdf: PdfDocument, text: PdfText) -> None:
        self.pdf = pdf
        self.text = text
        self.y = 0.0

    def font(self, size: float, bold: bool = False) -> None:
        self.pdf.set_font(size, bold)

    def write(self, x: float, y: float, text: str) -> None:
        self.pdf.text(x, y, text)

    def write_right(self, right: float, y: float, text: str) -> None:
        self.pdf.text(right - self.pdf.text_width(text), y, text)

    def wrap(self, text: str, width: float) -> list[str]:
        """Break ``text`` into lines no wider than ``width`` at spaces (never at non-breaking spaces)."""
        lines: list[str] = []
        current = ""
        for word in text.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and self.pdf.text_width(candidate) > width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
        return lines

    # Areas of the page

    def header(self) -> None:
        name, *address = self.text.seller or [""]
        self.font(13, bold=True)
        y = 22.0
        for part in self.wrap(name, HEADER_WIDTH)[:2]:
            self.write(LEFT, y, part)
            y += 5.5
        self.font(8.5)
        for line in address[:3]:
            self.write(LEFT, y - 0.5, line)
            y += 3.8
        self.font(18, bold=True)
        self.write_right(RIGHT, 24, self.text.title)

    def address(self, window_envelope: bool) -> None:
        address_top = WINDOW_TOP + RETURN_ZONE_HEIGHT
        if window_envelope:
            self.font(7)  # the return-address line is filled from the bottom of its zone
            self.write(LEFT, address_top - 1.5, self.wrap(self.text.return_address, ADDRESS_WIDTH)[0])
        self.font(10)
        lines = [part for line in self.text.recipient for part in self.wrap(line, ADDRESS_WIDTH)]
        for index, line in enumerate(lines[:6]):  # the address zone has room for six lines
            self.write(LEFT, address_top + 4 + 4.5 * index, line)

    def details(self) -> None:
        y = WINDOW_TOP + 4
        for label, value in self.text.details:
            self.font(9)
            self.write(DETAILS_LEFT, y, label)
            self.font(9, bold=True)
            self.write_right(RIGHT, y, value)
            y += 5
        label, value = self.text.amount_due
        self.pdf.fill_rect(DETAILS_LEFT - 2, y - 1, RIGHT - DETAILS_LEFT + 4, 9, grey=0.92)
        self.font(10, bold=True)
        self.write(DETAILS_LEFT, y + 5, label)
        self.write_right(RIGHT, y + 5, value)

    def table_header(self, y: float) -> float:
        labels = self.text.line_header
        self.font(8.5, bold=True)
        self.write(LEFT, y, labels[0])
        for right, label in zip(COLUMN_RIGHTS, labels[1:], strict=True):
            self.write_right(right, y, label)
        self.pdf.line(LEFT, y + 1.8, RIGHT, y + 1.8)
        return y + 6.5

    def lines_table(self) -> None:
        self.y = self.table_header(TABLE_TOP)
        for description, *numbers in self.text.lines:
            self.font(9)
            wrapped = self.wrap(description, DESCRIPTION_WIDTH)
            if self.y + 4.5 * len(wrapped) > PAGE_BOTTOM:
                self.next_page()
                self.font(9)
            for index, part in enumerate(wrapped):
                self.write(LEFT, self.y + 4.5 * index, part)
            for right, value in zip(COLUMN_RIGHTS, numbers, strict=True):
                self.write_right(right, self.y, value)
            self.y += 4.5 * len(wrapped) + 0.8
        self.pdf.line(LEFT, self.y - 2, RIGHT, self.y - 2)
        self.y += 3

    def totals(self) -> None:
        rows = len(self.text.totals) + 1
        if self.y + 5 * rows > PAGE_BOTTOM:
            self.next_page()
        self.font(9)
        for label, value in self.text.totals:
            self.write_right(RIGHT - 38, self.y, label)
            self.write_right(RIGHT, self.y, value)
            self.y += 5
        label, value = self.text.amount_due
        self.font(10.5, bold=True)
        self.write_right(RIGHT - 38, self.y + 1, label)
        self.write_right(RIGHT, self.y + 1, value)
        self.y += 12

    def payment(self, qr: GreyImage | None) -> None:
        height = max(QR_SIZE + 6 if qr is not None else 0, 5.0 * len(self.text.payment) + 8)
        if self.y + height > PAGE_BOTTOM:
            self.next_page()
        top = self.y
        self.pdf.line(LEFT, top - 4, RIGHT, top - 4)
        width = RIGHT - LEFT - (QR_SIZE + 8 if qr is not None else 0)
        self.font(10)
        y = top + 1
        for paragraph in self.text.payment:
            for line in self.wrap(paragraph, width):
                self.write(LEFT, y, line)
                y += 5
        if qr is not None:
            self.pdf.image(qr, RIGHT - QR_SIZE, top - 2, QR_SIZE, QR_SIZE)
            self.font(7)
            self.write_right(RIGHT, top + QR_SIZE, self.text.qr_caption)
        self.y = max(y, top + height)

    def footer(self) -> None:
        self.font(7.5)
        self.pdf.line(LEFT, PAGE_HEIGHT - 22, RIGHT, PAGE_HEIGHT - 22)
        for index, line in enumerate(self.wrap(self.text.footer, RIGHT - LEFT)[:3]):
            self.write(LEFT, PAGE_HEIGHT - 17 + 3.5 * index, line)

    def next_page(self) -> None:
        self.footer()
        self.pdf.add_page()
        self.font(12, bold=True)
        self.write(LEFT, 22, self.text.title)
        self.y = self.table_header(32)


def build_invoice_pdf(
    text: PdfText,
    *,
    title: str,
    language: str,
    created: datetime,
    qr: GreyImage | None = None,
    window_envelope: bool = False,
) -> bytes:
    """Return an A4 invoice PDF; add the payment QR code when ``qr`` is given.

    ``created`` is written as the creation date, so the same invoice renders to the same bytes.
    ``window_envelope`` adds the return address above the recipient, for printing and posting.
    """
    pdf = PdfDocument(title=title, language=language, created=created)
    pdf.add_page()
    page = _InvoicePage(pdf, text)
    page.header()
    page.address(window_envelope)
    page.details()
    page.lines_table()
    page.totals()
    page.payment(qr)
    page.footer()
    return pdf.output()
