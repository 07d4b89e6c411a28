"""Lay out an invoice PDF with fpdf2 from text rendered by a per-locale template.

The template renders plain lines; a line starting with ``# `` is a heading, ``| a | b`` is a
table row, and an empty line is vertical space. Core PDF fonts cover Latin-1, which holds the
letters of Swedish, Norwegian, Danish and Finnish; other characters are replaced.
"""

from __future__ import annotations

from datetime import datetime

from fpdf import FPDF


def _latin1(text: str) -> str:
    return text.replace("\u00a0", " ").replace("\u202f", " ").replace("€", "EUR").encode(
        "latin-1", "replace").decode("latin-1")


def build_pdf(text: str, *, title: str, created: datetime, qr_payload: str | None = None) -> bytes:
    """Return an A4 PDF of ``text``; add a payment QR code when a payload is given.

    ``created`` is written as the creation date, so the same invoice renders to the same bytes.
    """
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(title))
    pdf.set_creation_date(created)
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    for line in text.splitlines():
        if line.startswith("# "):
            pdf.set_font("Helvetica", style="B", size=14)
            pdf.cell(0, 9, _latin1(line[2:]), new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", size=10)
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            width = (pdf.w - pdf.l_margin - pdf.r_margin) / max(len(cells), 1)
            for index, cell in enumerate(cells):
                pdf.cell(width, 6, _latin1(cell), align="R" if index else "L")
            pdf.ln(6)
        elif not line.strip():
            pdf.ln(3)
        else:
            pdf.multi_cell(0, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    if qr_payload:
        import io

        import segno

        buffer = io.BytesIO()
        segno.make(qr_payload, error="m").save(buffer, kind="png", scale=4, border=2)
        buffer.seek(0)
        pdf.image(buffer, x=pdf.w - pdf.r_margin - 35, y=pdf.t_margin, w=35)
    return bytes(pdf.output())
