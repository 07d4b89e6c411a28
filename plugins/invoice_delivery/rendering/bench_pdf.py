"""Measure invoice PDF rendering on one core: templates, layout, QR code and fpdf2 output.

Run ``python -m invoice_delivery.rendering.bench_pdf [--invoices 500] [--seed 1]``. It builds
synthetic invoice rows in memory (no database) and renders each PDF once after a short warm-up.
It prints ``pdf_per_s_per_core: X``, the PDFs per second of this process's CPU time, so load from
other processes does not lower the figure. Rendering is single-threaded: one process, one core.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from invoice_delivery.rendering.formatting import SUPPORTED_LOCALES
from invoice_delivery.rendering.render import Renderer

WARM_UP = 20
_CENT = Decimal("0.01")
_NAMES = ("Anna Andersson", "Lars Øster", "Aino Mäkinen", "Emily Clarke", "Søren Bækgaard", "Åsa Öberg")
_LINES = (
    ("Elhandel, rörligt pris", "KWH", 25), ("Månadsavgift", "MON", 25), ("Elnät, fast avgift", "MON", 25),
    ("Elöverföring", "KWH", 25), ("Energiskatt", "KWH", 25), ("Kundtidningen Nordlys, helår", "C62", 6),
)  # fmt: skip


def _line(rng: random.Random, line_no: int) -> dict[str, Any]:
    description, unit, rate = _LINES[line_no - 1]
    quantity = Decimal(rng.randint(1, 2400)) if unit == "KWH" else Decimal(1)
    price = Decimal(rng.randint(3_500, 18_000)) / 10_000 if unit == "KWH" else Decimal(rng.randint(49, 300))
    return {
        "line_no": line_no, "line_id": str(line_no), "description": description, "quantity": quantity,
        "unit_code": unit, "unit_price": price, "net_amount": (quantity * price).quantize(_CENT),
        "vat_category": "S", "vat_rate": Decimal(rate),
    }  # fmt: skip


def _vat_breakdown(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    taxable: dict[Decimal, Decimal] = {}
    for line in lines:
        taxable[line["vat_rate"]] = taxable.get(line["vat_rate"], Decimal(0)) + line["net_amount"]
    return [
        {"vat_category": "S", "vat_rate": rate, "taxable_amount": amount,
         "tax_amount": (amount * rate / 100).quantize(_CENT)}
        for rate, amount in sorted(taxable.items(), reverse=True)
    ]  # fmt: skip


def invoice_row(rng: random.Random, number: int) -> dict[str, Any]:
    """Return one synthetic invoice row shaped like a row of the renderer's delivery query."""
    lines = [_line(rng, line_no) for line_no in range(1, rng.randint(1, len(_LINES)) + 1)]
    vat = _vat_breakdown(lines)
    net = sum((line["net_amount"] for line in lines), Decimal(0))
    tax = sum((subtotal["tax_amount"] for subtotal in vat), Decimal(0))
    credit_note = rng.random() < 0.02
    issue_date = date(2026, 3, 1) + timedelta(days=number % 28)
    return {
        "delivery_id": number, "invoice_id": number, "channel": "paper", "idempotency_key": f"bench-{number}",
        "purpose": "informational" if credit_note else "payment_demand", "invoice_number": str(10_000_000 + number),
        "document_type": "credit_note" if credit_note else "invoice", "type_code": "381" if credit_note else "380",
        "issue_date": issue_date, "due_date": None if credit_note else issue_date + timedelta(days=30),
        "currency": "SEK", "line_net_total": net, "net_total": net, "vat_total": tax, "gross_total": net + tax,
        "prepaid": Decimal(0), "rounding": Decimal(0), "payable": net + tax,
        "ocr_reference": None if credit_note else f"{10_000_000 + number}6", "payment_account": "5381-0420",
        "buyer_reference": None, "seller_name": "Nordlys Energi AB", "seller_country": "SE",
        "seller_org_number": "559183-7405", "seller_vat_number": "SE559183740501", "seller_peppol_id": None,
        "bankgiro": "5381-0420", "plusgiro": None, "iban": None, "seller_street": "Kraftverksvägen 7",
        "seller_postal_code": "903 27", "seller_city": "Umeå", "customer_id": f"C{number}",
        "customer_name": rng.choice(_NAMES), "kind": "person", "locale": SUPPORTED_LOCALES[number % 5],
        "time_zone": "Europe/Stockholm", "personal_number": None, "customer_org_number": None,
        "customer_vat_number": None, "customer_peppol_id": None, "email": None, "push_token": None,
        "street": f"Storgatan {number % 120 + 1}", "postal_code": "111 22", "city": "Stockholm",
        "customer_country": "SE", "lines": lines, "vat_breakdown": vat,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=500, help="number of PDFs to time (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic invoices (default 1)")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    renderer = Renderer()
    rows = [invoice_row(rng, number) for number in range(1, args.invoices + WARM_UP + 1)]
    for row in rows[:WARM_UP]:
        renderer.pdf(row)

    timed = rows[WARM_UP:]
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    total_bytes = sum(len(renderer.pdf(row)) for row in timed)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started

    demands = sum(1 for row in timed if row["document_type"] == "invoice")
    print(f"invoices: {len(timed)} ({demands} with a payment QR code), average PDF {total_bytes // len(timed)} bytes")
    print(f"cpu_seconds: {cpu:.3f}, wall_seconds: {wall:.3f}")
    print(f"pdf_per_s_per_core: {len(timed) / cpu:.1f}")


if __name__ == "__main__":
    main()
