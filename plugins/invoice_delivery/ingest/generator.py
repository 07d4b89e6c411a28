"""Generate synthetic Swedish consumer invoices and their customers for demos, tests and load runs.

Every person, number and address is fictional:

- Personal identity numbers (personnummer) are well-formed, with a valid Luhn check digit and a
  birth date from 1940 to 2005, so they may coincide with real people's numbers. They exist to
  exercise validation and mailbox matching and must never reach a real gateway.
- Mobile numbers come from 070-1740605 to 070-1740699, the range the Swedish regulator PTS
  reserves for use in fiction.
- E-mail addresses use example.com, example.org and example.net, which RFC 2606 reserves.
- The seller, Nordlys Energi AB, is invented. Its org number and bankgiro number have valid
  check digits but are not looked up anywhere.

Rows go in with PostgreSQL ``COPY`` in chunks, and a background thread sends one chunk while
the next is generated.

NOTE: the single PostgreSQL backend bounds throughput, and more than half of its time goes to
the foreign-key checks on billing.invoice, invoice_line and invoice_vat. On a shared 2-core VM
with PostgreSQL 18, one million invoices took about 95 s.
"""

from __future__ import annotations

import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg.rows import tuple_row
from stdnum import luhn

log = logging.getLogger(__name__)

CHUNK_SIZE = 20_000  # invoices per COPY round: about 20 MB of rows, about 60 MB with the queue full
DEFAULT_FIRST_NUMBER = 10_000_001
DAYS_TO_PAY = 30

# --- The seller ------------------------------------------------------------------------------

_ORG_NUMBER = "559183740" + luhn.calc_check_digit("559183740")  # 55... is the AB (limited company) range
_BANKGIRO_DIGITS = "5381042" + luhn.calc_check_digit("5381042")
SELLER_ID = f"0007:{_ORG_NUMBER}"  # ICD 0007: Swedish organisation number
SELLER = {
    "seller_id": SELLER_ID,
    "name": "Nordlys Energi AB",
    "country": "SE",
    "org_number": f"{_ORG_NUMBER[:6]}-{_ORG_NUMBER[6:]}",
    "vat_number": f"SE{_ORG_NUMBER}01",
    "peppol_id": SELLER_ID,
    "bankgiro": f"{_BANKGIRO_DIGITS[:4]}-{_BANKGIRO_DIGITS[4:]}",
    "plusgiro": None,
    "iban": None,
    # Validation checks each reference with the Luhn digit only, which the references that also
    # carry a length digit pass too.
    "ocr_variant": "luhn",
    "street": "Kraftverksvägen 7",
    "postal_code": "903 27",
    "city": "Umeå",
}

# --- Customers ---------------------------------------------------------------------------------

# (locale, time zone, weight). Most customers of a Swedish utility are Swedish-speaking.
_LOCALES = (
    ("sv", "Europe/Stockholm", 85),
    ("en", "Europe/Stockholm", 5),
    ("nb", "Europe/Oslo", 4),
    ("da", "Europe/Copenhagen", 3),
    ("fi", "Europe/Helsinki", 3),
)
_NAMES = {
    "sv": (
        ("Anna", "Eva", "Maria", "Karin", "Sara", "Lena", "Emma", "Kerstin", "Ingrid", "Linnéa", "Elsa",
         "Maja", "Astrid", "Åsa", "Lars", "Erik", "Anders", "Johan", "Per", "Karl", "Nils", "Mikael",
         "Björn", "Oskar", "Gustav", "Örjan", "Sven", "Göran"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
         "Svensson", "Gustafsson", "Lindberg", "Lindqvist", "Berg", "Sjöberg", "Åberg", "Ström",
         "Holmström", "Lundgren", "Björk", "Ekström", "Öberg", "Hedlund"),
    ),
    "en": (
        ("James", "Emily", "Oliver", "Sophie", "Daniel", "Hannah", "Thomas", "Grace"),
        ("Smith", "Brown", "Taylor", "Wilson", "Clarke", "Evans", "Walker", "Hughes"),
    ),
    "nb": (
        ("Ola", "Kari", "Ingrid", "Håkon", "Sigrid", "Øystein", "Solveig", "Magnus", "Ragnhild"),
        ("Hansen", "Johansen", "Olsen", "Larsen", "Haugen", "Bakken", "Løvås", "Strøm", "Dahl"),
    ),
    "da": (
        ("Mette", "Søren", "Jens", "Anne", "Rasmus", "Kirsten", "Mads", "Freja"),
        ("Jensen", "Nielsen", "Hansen", "Pedersen", "Sørensen", "Kristensen", "Møller", "Madsen"),
    ),
    "fi": (
        ("Aino", "Juha", "Mikko", "Päivi", "Tuula", "Jari", "Satu", "Eero"),
        ("Virtanen", "Korhonen", "Mäkinen", "Nieminen", "Hämäläinen", "Laine", "Heikkinen", "Koskinen"),
    ),
}  # fmt: skip
_ASCII = str.maketrans({"å": "a", "ä": "a", "ö": "o", "ø": "o", "æ": "ae", "é": "e", "ü": "u"})
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# The fiction range 070-1740605 to 070-1740699, as national significant numbers (no leading 0).
FICTION_MOBILES = tuple(f"70174{suffix:04d}" for suffix in range(605, 700))


def _written_forms(national: str) -> tuple[str, ...]:
    """Return the ways people write one Swedish mobile number, so validation must normalise."""
    n = national
    return (
        f"+46{n}",
        f"0{n[:2]}-{n[2:5]} {n[5:7]} {n[7:]}",
        f"+46 (0){n[:2]} {n[2:5]} {n[5:7]} {n[7:]}",
        f"0046{n}",
        f"0{n[:2]}-{n[2:]}",
        f"0{n}",
        f"+46 {n[:2]} {n[2:5]} {n[5:7]} {n[7:]}",
    )


_MOBILE_WRITINGS = tuple(form for number in FICTION_MOBILES for form in _written_forms(number))

# Channel preferences, first choice first, with weights: the digital mailbox and SMS lead.
_PREFERENCES = (
    (("mailbox", "sms", "email", "paper"), 18),
    (("mailbox", "email", "paper"), 12),
    (("mailbox", "paper"), 8),
    (("mailbox", "push", "sms", "paper"), 6),
    (("mailbox", "sms"), 3),
    (("sms", "mailbox", "email", "paper"), 10),
    (("sms", "email", "paper"), 10),
    (("sms", "paper"), 5),
    (("email", "paper"), 9),
    (("email", "sms", "paper"), 4),
    (("email",), 2),
    (("push", "sms", "email", "paper"), 5),
    (("push", "mailbox", "paper"), 3),
    (("paper",), 5),
)
_STREETS = (
    "Lingonstigen", "Blåbärsvägen", "Granbacken", "Tallåsvägen", "Ekorrgränd", "Björkhagsvägen",
    "Rönnbärsgatan", "Smultronstigen", "Hjortronvägen", "Vitsippsgatan", "Kvarnbäcksvägen",
    "Norrskensgatan", "Fyrvaktarvägen", "Mjölnargränd", "Sälgvägen", "Ljungbacken",
)  # fmt: skip
# (city, first three digits of its postal codes, weight)
_CITIES = (
    ("Stockholm", (112, 113, 114, 116, 118, 120, 124, 129), 30),
    ("Göteborg", (411, 412, 413, 414, 416, 418), 15),
    ("Malmö", (211, 212, 214, 216, 217), 10),
    ("Uppsala", (752, 753, 754, 756), 7),
    ("Västerås", (721, 722, 723, 724), 5),
    ("Örebro", (702, 703), 5),
    ("Linköping", (582, 583, 584, 587), 5),
    ("Jönköping", (553, 554, 555), 5),
    ("Umeå", (903, 904, 906), 5),
    ("Sundsvall", (852, 853, 854, 856), 5),
    ("Luleå", (972, 973, 974), 4),
    ("Kiruna", (981,), 4),
)

# Birth dates from 1940 to 2005, and the personnummer serials 001-999 for each date.
_FIRST_BIRTH_DATE = date(1940, 1, 1)
_BIRTH_DAYS = (date(2005, 12, 31) - _FIRST_BIRTH_DATE).days + 1
_SERIALS = 999
_PERSON_SPACE = _BIRTH_DAYS * _SERIALS
# Customer k gets person (k * _PERSON_STEP + _PERSON_OFFSET) mod _PERSON_SPACE. The step is a
# prime that does not divide the space, so the map is a bijection: personal numbers repeat
# only after _PERSON_SPACE (about 24 million) customers.
_PERSON_STEP = 7_368_787
_PERSON_OFFSET = 1_234_567

# --- Invoices ----------------------------------------------------------------------------------

CREDIT_NOTE_SHARE = 0.02
ZERO_AMOUNT_SHARE = 0.01
LENGTH_DIGIT_OCR_SHARE = 0.3  # OCR numbers whose second-to-last digit is the length mod 10
COMBINED_BILLING_SHARE = 0.1  # customers whose grid fees the seller bills too
_MONTH_FEE = 4_900  # öre per month
_GRID_FEES = (29_500, 34_500, 39_500, 46_500)  # öre per month
_ENERGY_TAX = 4_390  # 1/10 000 SEK per kWh (0.4390 SEK), excluding VAT
_NULL = "\\N"  # NULL in COPY text format


@dataclass(frozen=True)
class GenerateReport:
    """Rows written by one :func:`generate` call."""

    seller_id: str
    invoices: int
    customers: int
    lines: int
    vat_rows: int
    credit_notes: int
    zero_amount: int
    first_number: int | None  # None when n was 0
    last_number: int | None
    elapsed_seconds: float


def generate(
    conn: psycopg.Connection,
    n: int,
    *,
    seed: int = 42,
    ready_from: datetime,
    ready_until: datetime,
    first_number: int | None = None,
) -> GenerateReport:
    """Write ``n`` synthetic consumer invoices, one new customer each, and the seller.

    Invoice numbers run from ``first_number``, or from just after the largest generated number
    in the database when it is None, so repeated calls add new invoices. Output is deterministic
    for the same seed and first number. ``ready_at`` is spread uniformly over
    ``[ready_from, ready_until)``.

    Everything is written in one transaction (a savepoint when the caller has one open). A
    background thread runs the ``COPY`` of one chunk while the next chunk is generated, so
    Python and the server work in parallel.

    Raises:
        ValueError: ``n`` is negative, the window is empty or not time zone aware, or
            ``first_number`` is not above the largest generated number.
    """
    _check_arguments(n, ready_from, ready_until, first_number)
    started = time.perf_counter()
    totals = _Chunk()
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        # Serialise generators so two calls never pick the same invoice numbers.
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('billing.invoice:generator', 0))")
        first = _first_number(cur, first_number)
        _insert_seller(cur)
        invoice_ids = _reserve_invoice_ids(cur, n)
        log.info("Generating %d invoices from number %d", n, first)

        generator = _InvoiceGenerator(random.Random(f"{seed}:{first}"), ready_from, ready_until)
        with _CopyWriter(cur) as writer:
            for start in range(0, n, CHUNK_SIZE):
                stop = min(n, start + CHUNK_SIZE)
                chunk = generator.chunk(range(first + start, first + stop), invoice_ids[start:stop])
                totals.add_counts(chunk)
                writer.submit(chunk.copy_data())

    report = GenerateReport(
        seller_id=SELLER_ID,
        invoices=n,
        customers=n,
        lines=totals.line_count,
        vat_rows=totals.vat_count,
        credit_notes=totals.credit_notes,
        zero_amount=totals.zero_amount,
        first_number=first if n else None,
        last_number=first + n - 1 if n else None,
        elapsed_seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "Generated %d invoices (numbers %s to %s, %d credit notes, %d zero-amount) in %.1f s",
        n, report.first_number, report.last_number, report.credit_notes, report.zero_amount,
        report.elapsed_seconds,
    )  # fmt: skip
    return report


def _check_arguments(n: int, ready_from: datetime, ready_until: datetime, first_number: int | None) -> None:
    if n < 0:
        raise ValueError(f"n is {n}; pass the number of invoices to generate, 0 or more")
    if ready_from.tzinfo is None or ready_until.tzinfo is None:
        raise ValueError(
            f"ready_from {ready_from.isoformat()} and ready_until {ready_until.isoformat()} must both "
            f"be time zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)"
        )
    if ready_until <= ready_from:
        raise ValueError(
            f"ready_until {ready_until.isoformat()} is not after ready_from {ready_from.isoformat()}; "
            f"pass a non-empty window"
        )
    if first_number is not None and first_number < 1:
        raise ValueError(f"first_number is {first_number}; pass a positive number or None")


def _first_number(cur: psycopg.Cursor, requested: int | None) -> int:
    cur.execute("SELECT max(source_key::bigint) FROM billing.invoice WHERE source = 'generator'")
    largest = cur.fetchone()[0]
    if requested is None:
        return DEFAULT_FIRST_NUMBER if largest is None else largest + 1
    if largest is not None and requested <= largest:
        raise ValueError(
            f"first_number {requested} is not above the largest generated invoice number {largest}; "
            f"pass None to continue after it, or a number above {largest}"
        )
    return requested


def _insert_seller(cur: psycopg.Cursor) -> None:
    columns = ", ".join(SELLER)
    placeholders = ", ".join(["%s"] * len(SELLER))
    cur.execute(
        f"INSERT INTO billing.seller ({columns}) VALUES ({placeholders}) ON CONFLICT (seller_id) DO NOTHING",
        list(SELLER.values()),
    )


def _reserve_invoice_ids(cur: psycopg.Cursor, n: int) -> list[int]:
    """Draw ``n`` ids from the invoice sequence, so rows for all tables can be built in Python."""
    cur.execute(
        "SELECT nextval(pg_get_serial_sequence('billing.invoice', 'invoice_id')) FROM generate_series(1, %s)",
        (n,),
    )
    return [row[0] for row in cur.fetchall()]


# --- COPY -----------------------------------------------------------------------------------------

_CUSTOMER_COPY = (
    "COPY billing.customer (customer_id, kind, name, personal_number, locale, time_zone, email, mobile,"
    " push_token, street, postal_code, city, country, channel_preferences, consents) FROM STDIN"
)
_INVOICE_COPY = (
    "COPY billing.invoice (invoice_id, source, source_key, seller_id, customer_id, invoice_number,"
    " document_type, type_code, issue_date, due_date, currency, line_net_total, net_total, vat_total,"
    " gross_total, prepaid, rounding, payable, ocr_reference, payment_account, note, ready_at) FROM STDIN"
)
_LINE_COPY = (
    "COPY billing.invoice_line (invoice_id, line_no, line_id, description, quantity, unit_code, unit_price,"
    " net_amount, vat_category, vat_rate) FROM STDIN"
)
_VAT_COPY = "COPY billing.invoice_vat (invoice_id, vat_category, vat_rate, taxable_amount, tax_amount) FROM STDIN"


class _Chunk:
    """COPY text rows for a run of invoices, one list per table, and what they contain.

    Generated text never contains a tab, newline or backslash, so the rows need no escaping.
    """

    def __init__(self) -> None:
        self.customers: list[str] = []
        self.invoices: list[str] = []
        self.lines: list[str] = []
        self.vat: list[str] = []
        self.line_count = self.vat_count = self.credit_notes = self.zero_amount = 0

    def copy_data(self) -> list[tuple[str, str]]:
        """Return (COPY statement, rows) per table, parents before children."""
        return [
            (_CUSTOMER_COPY, "".join(self.customers)),
            (_INVOICE_COPY, "".join(self.invoices)),
            (_LINE_COPY, "".join(self.lines)),
            (_VAT_COPY, "".join(self.vat)),
        ]

    def add_counts(self, other: _Chunk) -> None:
        self.line_count += len(other.lines)
        self.vat_count += len(other.vat)
        self.credit_notes += other.credit_notes
        self.zero_amount += other.zero_amount


class _CopyWriter:
    """Run each chunk's COPY statements in a background thread, in the order submitted.

    The calling thread must not use the connection until the ``with`` block ends. An error in
    the thread is raised in the caller at the next :meth:`submit` or at the end of the block.
    """

    def __init__(self, cur: psycopg.Cursor) -> None:
        self.cur = cur
        self.pending: queue.Queue[list[tuple[str, str]] | None] = queue.Queue(maxsize=2)  # bounds memory
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="invoice-generator-copy", daemon=True)

    def __enter__(self) -> _CopyWriter:
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.pending.put(None)
        self.thread.join()
        if exc is None:
            self._raise_error()

    def submit(self, copy_data: list[tuple[str, str]]) -> None:
        self._raise_error()
        self.pending.put(copy_data)

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        # After an error, take the remaining chunks without writing them, so a caller that
        # waits on a full queue can go on to its next submit() and receive the error.
        while (copy_data := self.pending.get()) is not None:
            if self.error is not None:
                continue
            try:
                for statement, rows in copy_data:
                    with self.cur.copy(statement) as copy:
                        copy.write(rows)
            except BaseException as exc:  # handed to the calling thread
                self.error = exc


# --- Numbers and amounts ---------------------------------------------------------------------------


def _money(ore: int) -> str:
    """Format an amount in öre as SEK with two decimals."""
    if ore < 0:
        return f"-{-ore // 100}.{-ore % 100:02d}"
    return f"{ore // 100}.{ore % 100:02d}"


def _price(ten_thousandths: int) -> str:
    """Format a unit price in 1/10 000 SEK with four decimals."""
    return f"{ten_thousandths // 10_000}.{ten_thousandths % 10_000:04d}"


def _divide_rounded(numerator: int, denominator: int) -> int:
    """Divide and round half away from zero, as amounts on invoices are rounded."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


_DIGITS = "0123456789"
_PLAIN = {digit: int(digit) for digit in _DIGITS}
_DOUBLED = {digit: sum(divmod(2 * int(digit), 10)) for digit in _DIGITS}


def _luhn_sum(digits: str, double_last: bool) -> int:
    """Sum the Luhn contributions of ``digits``, doubling every second digit from the last."""
    doubled, plain = (digits[::-2], digits[-2::-2]) if double_last else (digits[-2::-2], digits[::-2])
    return sum(map(_DOUBLED.__getitem__, doubled)) + sum(map(_PLAIN.__getitem__, plain))


def _luhn_digit(payload: str) -> str:
    """Return the Luhn check digit for ``payload``, as ``stdnum.luhn.calc_check_digit`` does.

    The generator computes check digits itself because stdnum's generic version takes a large
    share of its time. The tests check that both agree.
    """
    return _DIGITS[-_luhn_sum(payload, double_last=True) % 10]


def ocr_reference(base: str, with_length_digit: bool) -> str:
    """Build a Swedish OCR reference: ``base``, optionally a length digit, then a Luhn digit.

    With the length digit, the second-to-last digit is the total length modulo 10, which lets
    the bank reject a reference with a missing or extra digit.
    """
    if with_length_digit:
        base += str((len(base) + 2) % 10)
    return base + _luhn_digit(base)


@functools.cache
def _three_digit_sums() -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """Return 000-999 as text with their Luhn sums when the last digit is doubled, and when not."""
    texts = tuple(f"{value:03d}" for value in range(1000))
    doubled = tuple(_luhn_sum(text, double_last=True) for text in texts)
    plain = tuple(_luhn_sum(text, double_last=False) for text in texts)
    return texts, doubled, plain


class _OcrNumbers:
    """Build :func:`ocr_reference` for consecutive invoice numbers faster than digit by digit.

    Luhn sums add up by position, so the sum of the leading digits is computed once per
    thousand numbers and the last three digits come from a table.
    """

    def __init__(self) -> None:
        self.prefix_sums: dict[int, tuple[str, int, int]] = {}

    def reference(self, number: int, with_length_digit: bool) -> str:
        if number < 1000:
            return ocr_reference(str(number), with_length_digit)
        high, low = divmod(number, 1000)
        prefix_sums = self.prefix_sums.get(high)
        if prefix_sums is None:
            prefix = str(high)
            prefix_sums = (prefix, _luhn_sum(prefix, double_last=True), _luhn_sum(prefix, double_last=False))
            self.prefix_sums[high] = prefix_sums
        prefix, prefix_doubled, prefix_plain = prefix_sums
        texts, low_doubled, low_plain = _three_digit_sums()
        base = prefix + texts[low]
        if with_length_digit:
            # base + L + check: L is doubled, so the digits of base shift by one position.
            length_digit = _DIGITS[(len(base) + 2) % 10]
            total = prefix_doubled + low_plain[low] + _DOUBLED[length_digit]
            return base + length_digit + _DIGITS[-total % 10]
        return base + _DIGITS[-(prefix_plain + low_doubled[low]) % 10]


@functools.cache
def _person_tables() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[int, ...]]:
    """Return the birth dates YYYYMMDD and serials NNN with their Luhn sums, built on first use.

    The personnummer check digit covers YYMMDDNNN, whose last digit is doubled, so the date's
    last digit is not.
    """
    dates = tuple((_FIRST_BIRTH_DATE + timedelta(days=offset)).strftime("%Y%m%d") for offset in range(_BIRTH_DAYS))
    serials = tuple(f"{serial:03d}" for serial in range(1, _SERIALS + 1))
    date_sums = tuple(_luhn_sum(birth_date[2:], double_last=False) for birth_date in dates)
    serial_sums = tuple(_luhn_sum(serial, double_last=True) for serial in serials)
    return dates, date_sums, serials, serial_sums


def personal_number(customer_number: int) -> str:
    """Return the 12-digit personnummer YYYYMMDDNNNC of generated customer ``customer_number``."""
    dates, date_sums, serials, serial_sums = _person_tables()
    person = (customer_number * _PERSON_STEP + _PERSON_OFFSET) % _PERSON_SPACE
    day, serial = divmod(person, _SERIALS)
    return dates[day] + serials[serial] + _DIGITS[-(date_sums[day] + serial_sums[serial]) % 10]


def _weighted(pairs: Sequence[tuple[object, int]]) -> tuple:
    """Expand (value, weight) pairs into a table that a uniform index samples by weight."""
    return tuple(value for value, weight in pairs for _ in range(weight))


# --- One invoice ---------------------------------------------------------------------------------

# A line: the COPY text after invoice_id, line_no and line_id, the net amount in öre and the VAT percent.
_Line = tuple[str, int, int]


def _line(description: str, quantity: int, unit: str, price: int, rate: int) -> _Line:
    """Build a line from a unit price in 1/10 000 SEK, with the net rounded to whole öre."""
    net = _divide_rounded(quantity * price, 100)
    return f"{description}\t{quantity}\t{unit}\t{_price(price)}\t{_money(net)}\tS\t{rate}\n", net, rate


_MONTH_FEE_LINE = _line("Månadsavgift", 1, "MON", _MONTH_FEE * 100, 25)
_GRID_FEE_LINES = tuple(_line("Elnät, fast avgift", 1, "MON", fee * 100, 25) for fee in _GRID_FEES)
# Occasional extras at the reduced VAT rates of 12 % and 6 %.
_FIKA_LINE = _line("Fika vid energirådgivning", 1, "C62", 8_500 * 100, 12)
_MAGAZINE_LINE = _line("Kundtidningen Nordlys, helår", 1, "C62", 12_000 * 100, 6)
# A negative quantity, not a negative price: EN 16931 forbids negative net prices.
_ZERO_AMOUNT_LINES = [_MONTH_FEE_LINE, _line("Välkomstrabatt, månadsavgift", -1, "MON", _MONTH_FEE * 100, 25)]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX_EPOCH_ORDINAL = _UNIX_EPOCH.toordinal()
_DAY_US = 86_400_000_000


class _InvoiceGenerator:
    """Draw customers and invoices from one seeded random stream."""

    def __init__(self, rng: random.Random, ready_from: datetime, ready_until: datetime) -> None:
        self.rng = rng
        self.random = rng.random
        self.ready_from_us = (ready_from - _UNIX_EPOCH) // timedelta(microseconds=1)
        self.window_us = (ready_until - ready_from) // timedelta(microseconds=1)
        # Weighted tables of ready-made text, so each customer costs a few look-ups.
        self.locales = _weighted(
            [((locale, zone, _people(*_NAMES[locale])), weight) for locale, zone, weight in _LOCALES]
        )
        self.preferences = _weighted([((prefs, _array(prefs)), weight) for prefs, weight in _PREFERENCES])
        self.cities = _weighted([((city, _postal_codes(prefixes)), weight) for city, prefixes, weight in _CITIES])
        self.streets = tuple(f"{street} {number}" for street in _STREETS for number in range(1, 121))
        # Caches: formatting dates and times is a large share of the generator's time.
        self.date_text: dict[int, str] = {}
        self.time_text: dict[int, str] = {}
        self.ocr_numbers = _OcrNumbers()

    def pick(self, table: Sequence):
        return table[int(self.random() * len(table))]

    def below(self, stop: int, start: int = 0) -> int:
        """Return a random integer in [start, stop), faster than ``Random.randrange``."""
        return start + int(self.random() * (stop - start))

    def chunk(self, numbers: range, invoice_ids: Sequence[int]) -> _Chunk:
        chunk = _Chunk()
        for number, invoice_id in zip(numbers, invoice_ids, strict=True):
            customer_id = f"C{number}"
            chunk.customers.append(self.customer_row(customer_id, number))
            roll = self.random()
            if roll < CREDIT_NOTE_SHARE:
                kind, lines = "credit_note", self.credit_note_lines()
                chunk.credit_notes += 1
            elif roll < CREDIT_NOTE_SHARE + ZERO_AMOUNT_SHARE:
                kind, lines = "zero_amount", _ZERO_AMOUNT_LINES
                chunk.zero_amount += 1
            else:
                kind, lines = "invoice", self.energy_lines()
            chunk.invoices.append(self.invoice_row(chunk, invoice_id, number, customer_id, kind, lines))
        return chunk

    # Customers

    def customer_row(self, customer_id: str, number: int) -> str:
        random = self.random
        locale, time_zone, people = self.pick(self.locales)
        name, email_name = self.pick(people)
        preferences, preferences_text = self.pick(self.preferences)

        mobile = self.pick(_MOBILE_WRITINGS) if random() < (0.92 if "sms" in preferences else 0.6) else _NULL
        email = _NULL
        if random() < (0.95 if "email" in preferences else 0.5):
            email = f"{email_name}{self.below(100)}@{self.pick(_EMAIL_DOMAINS)}"
        push_token = _NULL
        if random() < (0.9 if "push" in preferences else 0.05):
            push_token = f"{self.rng.getrandbits(256):064x}"

        city, postal_codes = self.pick(self.cities)
        street = self.pick(self.streets)
        if random() < 0.3:
            street = f"{street} lgh {self.below(1604, 1001)}"  # Swedish apartment number

        consents = self.consents(preferences)
        consents_text = preferences_text if consents is preferences else _array(consents)
        return (
            f"{customer_id}\tperson\t{name}\t{personal_number(number)}\t{locale}\t{time_zone}\t"
            f"{email}\t{mobile}\t{push_token}\t{street}\t{self.pick(postal_codes)}\t{city}\tSE\t"
            f"{preferences_text}\t{consents_text}\n"
        )

    def consents(self, preferences: tuple[str, ...]) -> tuple[str, ...]:
        """Draw consents: mostly every preferred channel, but some customers withhold one or all."""
        roll = self.random()
        if roll < 0.85:
            return preferences
        digital = [channel for channel in preferences if channel != "paper"]
        if roll < 0.96 and digital:
            withheld = self.pick(digital)
            return tuple(channel for channel in preferences if channel != withheld)
        return tuple(channel for channel in preferences if channel == "paper")

    # Lines

    def energy_lines(self) -> list[_Line]:
        """Draw a monthly electricity bill: energy, fees, and sometimes grid fees and extras."""
        random = self.random
        kwh = self.below(2401, 80)
        lines = [_line("Elhandel, rörligt pris", kwh, "KWH", self.below(18_001, 3_500), 25)]
        if random() < 0.9:
            lines.append(_MONTH_FEE_LINE)
        if random() < COMBINED_BILLING_SHARE:
            lines.append(self.pick(_GRID_FEE_LINES))
            lines.append(_line("Elöverföring", kwh, "KWH", self.below(4_501, 2_500), 25))
            lines.append(_line("Energiskatt", kwh, "KWH", _ENERGY_TAX, 25))
        if random() < 0.04:
            lines.append(_FIKA_LINE)
        if random() < 0.04:
            lines.append(_MAGAZINE_LINE)
        return lines

    def credit_note_lines(self) -> list[_Line]:
        price = self.below(18_001, 3_500)
        return [_line("Kreditering elhandel, felaktig mätaravläsning", self.below(401, 50), "KWH", price, 25)]

    # Invoices

    def invoice_row(
        self, chunk: _Chunk, invoice_id: int, number: int, customer_id: str, kind: str, lines: list[_Line]
    ) -> str:
        random = self.random
        taxable_by_rate: dict[int, int] = {}
        for line_no, (text, net, rate) in enumerate(lines, start=1):
            taxable_by_rate[rate] = taxable_by_rate.get(rate, 0) + net
            chunk.lines.append(f"{invoice_id}\t{line_no}\t{line_no}\t{text}")
        # VAT is rounded once per rate, not per line.
        tax_by_rate = {rate: _divide_rounded(taxable * rate, 100) for rate, taxable in taxable_by_rate.items()}
        net_total, vat_total = sum(taxable_by_rate.values()), sum(tax_by_rate.values())
        gross = net_total + vat_total
        net_text, vat_text, gross_text = _money(net_total), _money(vat_total), _money(gross)
        if len(taxable_by_rate) == 1:  # most invoices: the single VAT row repeats the totals
            (only_rate,) = taxable_by_rate
            chunk.vat.append(f"{invoice_id}\tS\t{only_rate}\t{net_text}\t{vat_text}\n")
        else:
            for rate in sorted(taxable_by_rate):
                taxable, tax = _money(taxable_by_rate[rate]), _money(tax_by_rate[rate])
                chunk.vat.append(f"{invoice_id}\tS\t{rate}\t{taxable}\t{tax}\n")

        prepaid = rounding = 0
        if kind == "invoice":
            if random() < 0.05:
                prepaid = gross * self.below(51, 10) // 10_000 * 100  # an on-account payment in whole SEK
            if random() < 0.4:
                due = gross - prepaid
                rounding = _divide_rounded(due, 100) * 100 - due  # payable rounded to whole SEK
        if prepaid or rounding:
            adjustments = f"{_money(prepaid)}\t{_money(rounding)}\t{_money(gross - prepaid + rounding)}"
        else:
            adjustments = f"0.00\t0.00\t{gross_text}"

        ready_day, ready_at = self.ready_at()
        issue_day = ready_day - self.below(3)
        if kind == "credit_note":
            document = "credit_note\t381"
            due_date = ocr = account = _NULL
            note = "Kreditering av felaktig mätaravläsning"
        else:
            document = "invoice\t380"
            due_date = self.iso_date(issue_day + DAYS_TO_PAY)
            ocr = self.ocr_numbers.reference(number, random() < LENGTH_DIGIT_OCR_SHARE)
            account, note = SELLER["bankgiro"], _NULL
        return (
            f"{invoice_id}\tgenerator\t{number}\t{SELLER_ID}\t{customer_id}\t{number}\t{document}\t"
            f"{self.iso_date(issue_day)}\t{due_date}\tSEK\t{net_text}\t{net_text}\t{vat_text}\t"
            f"{gross_text}\t{adjustments}\t{ocr}\t{account}\t{note}\t{ready_at}\n"
        )

    def ready_at(self) -> tuple[int, str]:
        """Draw a uniform time in the window, and return its UTC day ordinal and timestamptz text."""
        instant = self.ready_from_us + int(self.random() * self.window_us)
        day, in_day = divmod(instant, _DAY_US)
        second, microsecond = divmod(in_day, 1_000_000)
        time_text = self.time_text.get(second)
        if time_text is None:
            hours, rest = divmod(second, 3600)
            time_text = self.time_text[second] = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        ordinal = _UNIX_EPOCH_ORDINAL + day
        return ordinal, f"{self.iso_date(ordinal)} {time_text}.{microsecond:06d}+00"

    def iso_date(self, ordinal: int) -> str:
        text = self.date_text.get(ordinal)
        if text is None:
            text = self.date_text[ordinal] = date.fromordinal(ordinal).isoformat()
        return text


def _people(first_names: Sequence[str], last_names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Return every (full name, e-mail local part) pair of the given first and last names."""
    return tuple(
        (f"{first} {last}", f"{first}.{last}".lower().translate(_ASCII)) for first in first_names for last in last_names
    )


def _postal_codes(prefixes: Sequence[int]) -> tuple[str, ...]:
    """Return the Swedish postal codes "NNN NN" that start with the given three digits."""
    return tuple(f"{prefix} {rest:02d}" for prefix in prefixes for rest in range(100))


def _array(values: Sequence[str]) -> str:
    """Format a text[] value for COPY text format."""
    return "{" + ",".join(values) + "}"
