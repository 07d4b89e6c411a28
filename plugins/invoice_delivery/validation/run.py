"""Validate one batch: run the suite, quarantine failing invoices with reasons, store the result."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import pandas as pd
import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger
from invoice_delivery.validation.guards import BatchGuardError
from invoice_delivery.validation.rules import add_rule_columns, shown_value
from invoice_delivery.validation.suite import Expectation, build_expectations, run_suite

log = project_logger(__name__)

_FRAME_SQL = """
SELECT i.invoice_id, i.invoice_number, i.seller_id, i.customer_id, i.document_type, i.issue_date,
       i.due_date, i.currency, i.line_net_total, i.allowance_total, i.charge_total, i.net_total, i.vat_total,
       i.gross_total, i.prepaid, i.rounding, i.payable, i.ocr_reference, i.payment_terms, i.updated_at,
       s.country AS seller_country, s.bankgiro, s.plusgiro, s.ocr_variant,
       c.customer_id IS NOT NULL AS customer_found, c.mobile, c.email, c.personal_number,
       c.peppol_id AS customer_peppol_id, c.country AS customer_country,
       coalesce(l.line_count, 0) AS line_count, l.lines_net_sum,
       coalesce(l.over_two_decimals, false) AS line_amount_over_two_decimals,
       coalesce(v.vat_rows, 0) AS vat_rows, v.vat_tax_sum, v.vat_taxable_sum, v.vat_breakdown,
       ARRAY(SELECT DISTINCT r::text FROM (
             SELECT vat_rate AS r FROM billing.invoice_line WHERE invoice_id = i.invoice_id
             UNION SELECT vat_rate FROM billing.invoice_vat WHERE invoice_id = i.invoice_id) rates) AS vat_rates
FROM delivery.batch_item bi
JOIN delivery.document d ON d.invoice_id = bi.invoice_id AND d.status = 'extracted'
JOIN billing.invoice i ON i.invoice_id = bi.invoice_id
JOIN billing.seller s ON s.seller_id = i.seller_id
LEFT JOIN billing.customer c ON c.customer_id = i.customer_id
LEFT JOIN LATERAL (
    SELECT count(*) AS line_count, sum(net_amount) AS lines_net_sum,
           bool_or(net_amount <> round(net_amount, 2)) AS over_two_decimals
    FROM billing.invoice_line WHERE invoice_id = i.invoice_id) l ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS vat_rows, sum(tax_amount) AS vat_tax_sum, sum(taxable_amount) AS vat_taxable_sum,
           array_agg(ARRAY[vat_rate::text, taxable_amount::text, tax_amount::text]) AS vat_breakdown
    FROM billing.invoice_vat WHERE invoice_id = i.invoice_id) v ON true
WHERE bi.batch_id = %s
ORDER BY i.invoice_id
"""


# Columns the suite reads, with the Python type the database driver must deliver for each.
EXPECTED_COLUMNS: dict[str, type] = {
    "invoice_id": int, "invoice_number": str, "seller_id": str, "document_type": str, "issue_date": date,
    "currency": str, "net_total": Decimal, "vat_total": Decimal, "gross_total": Decimal, "payable": Decimal,
    "prepaid": Decimal, "rounding": Decimal,
}


def check_schema(frame: pd.DataFrame) -> None:
    """Stop the run when a column is missing or its values have the wrong type."""
    missing = [column for column in EXPECTED_COLUMNS if column not in frame.columns]
    if missing:
        raise BatchGuardError(f"schema guard: columns {missing} are missing from the extracted batch; "
                              f"check the billing schema against the migrations")
    for column, expected in EXPECTED_COLUMNS.items():
        values = frame[column].dropna()
        wrong = values[~values.map(lambda value, t=expected: isinstance(value, t))]
        if not wrong.empty:
            raise BatchGuardError(
                f"schema guard: column {column} holds {type(wrong.iloc[0]).__name__} values, expected "
                f"{expected.__name__} (first at invoice id {frame.loc[wrong.index[0], 'invoice_id']}); "
                f"check the column's type in billing.invoice"
            )


def check_not_empty(conn: psycopg.Connection, batch_id: int, frame: pd.DataFrame) -> None:
    """Stop the run when the batch's extracted invoices did not all reach the frame.

    A ``not null`` expectation passes on zero rows, so an empty frame is checked against the
    ledger's own count instead of trusting the suite.
    """
    expected = conn.execute(
        "SELECT count(*) AS n FROM delivery.batch_item bi JOIN delivery.document d USING (invoice_id)"
        " WHERE bi.batch_id = %s AND d.status = 'extracted'", (batch_id,)).fetchone()["n"]
    if len(frame) != expected:
        raise BatchGuardError(
            f"empty-batch guard: batch {batch_id} has {expected} extracted invoices but {len(frame)} reached "
            f"validation; an invoice's seller or columns may be missing from the billing schema"
        )


@dataclass
class ValidationOutcome:
    """Counts of one batch's validation; ids only, so it can travel in XCom."""

    batch_id: int
    validated: int = 0
    passed: int = 0
    quarantined: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


def load_rows(conn: psycopg.Connection, batch_id: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Return the batch's extracted invoices as a frame and as the driver's dict rows, in the same order."""
    cursor = conn.execute(_FRAME_SQL, (batch_id,))
    columns = [column.name for column in cursor.description]
    rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=columns), rows


def load_frame(conn: psycopg.Connection, batch_id: int) -> pd.DataFrame:
    return load_rows(conn, batch_id)[0]


def _key(expectation_type: str, kwargs: dict) -> tuple:
    """Identify an expectation in a result: GX does not keep the suite's order."""
    columns = kwargs.get("column_list") or [kwargs.get("column")]
    return expectation_type, tuple(columns)


def failures_by_invoice(result: Any, expectations: list[Expectation], frame: pd.DataFrame) -> dict[int, list[dict]]:
    """Turn the GX result into ``{invoice_id: [reason, ...]}`` for the failing rows."""
    values = frame.set_index("invoice_id")
    reasons: dict[int, list[dict]] = defaultdict(list)
    configs = [(e, e.config.configuration) for e in expectations]
    by_key = {_key(config.type, config.kwargs): e for e, config in configs}
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        expectation = by_key[_key(config.type, config.kwargs)]
        for item in outcome.result.get("unexpected_index_list") or []:
            invoice_id = int(item["invoice_id"])
            value = values.at[invoice_id, expectation.column] if expectation.column in values.columns else None
            reasons[invoice_id].append({
                "rule": expectation.rule,
                "column": expectation.column,
                "value": shown_value(expectation.row_rule, expectation.column, value),
                "message": expectation.message,
            })
    return reasons


def validate_batch(conn: psycopg.Connection, ctx: RunContext, batch_id: int) -> ValidationOutcome:
    """Validate the batch's newly extracted invoices; quarantine failures in the same transaction."""
    frame, rows = load_rows(conn, batch_id)
    check_not_empty(conn, batch_id, frame)
    outcome = ValidationOutcome(batch_id=batch_id, validated=len(frame))
    if frame.empty:
        log.info("Batch %s: nothing to validate", batch_id)
        return outcome
    check_schema(frame)

    frame = add_rule_columns(frame, rows)
    del rows
    expectations = build_expectations()
    result = run_suite(frame, expectations)
    reasons = failures_by_invoice(result, expectations, frame)

    _quarantine(conn, ctx, frame, reasons)
    passed_ids = [int(i) for i in frame["invoice_id"] if int(i) not in reasons]
    ledger.record_events(
        conn, ctx, "validated",
        ({"invoice_id": i, "details": {"batch_id": batch_id, "expectations": len(expectations)}} for i in passed_ids),
    )
    outcome.quarantined = len(reasons)
    outcome.passed = outcome.validated - outcome.quarantined
    outcome.by_rule = dict(Counter(reason["rule"] for items in reasons.values() for reason in items))
    conn.execute(
        "INSERT INTO delivery.validation_result (batch_id, run_id, validated, passed, quarantined, by_rule, result)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (batch_id) DO UPDATE SET validated = EXCLUDED.validated, passed = EXCLUDED.passed,"
        " quarantined = EXCLUDED.quarantined, by_rule = EXCLUDED.by_rule, result = EXCLUDED.result,"
        " created_at = now()",
        (batch_id, ctx.run_id, outcome.validated, outcome.passed, outcome.quarantined,
         json.dumps(outcome.by_rule), json.dumps(result.to_json_dict(), default=str)),
    )
    log.info(
        "Batch %s validated: %d invoices, %d passed, %d quarantined; by rule: %s. Full result: "
        "delivery.validation_result batch_id=%s (invoice-delivery validation %s)",
        batch_id, outcome.validated, outcome.passed, outcome.quarantined,
        json.dumps(outcome.by_rule, sort_keys=True) or "{}", batch_id, batch_id,
    )
    if reasons:
        log.info("Batch %s quarantined invoice ids: %s", batch_id, sorted(reasons))
    return outcome


def _fingerprint(row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{row['invoice_id']}:{row['updated_at'].isoformat()}".encode()).hexdigest()


def _quarantine(conn: psycopg.Connection, ctx: RunContext, frame: pd.DataFrame, reasons: dict[int, list[dict]]) -> None:
    if not reasons:
        return
    rows = frame.set_index("invoice_id", drop=False).loc[sorted(reasons)].to_dict("records")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.quarantine (invoice_id, run_id, reasons, source_hash) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (invoice_id) WHERE released_at IS NULL DO UPDATE"
            " SET reasons = EXCLUDED.reasons, run_id = EXCLUDED.run_id, source_hash = EXCLUDED.source_hash",
            [(row["invoice_id"], ctx.run_id, json.dumps(reasons[row["invoice_id"]]), _fingerprint(row))
             for row in rows],
        )
    summaries = {i: "; ".join(f"{r['rule']}: {r['message']}" for r in items) for i, items in reasons.items()}
    ledger.set_document_status(conn, ctx, sorted(reasons), "quarantined", reasons=summaries,
                               from_statuses=["extracted"])
    ledger.record_events(
        conn, ctx, "quarantined",
        ({"invoice_id": i, "to_state": "quarantined", "details": {"reasons": reasons[i]}} for i in sorted(reasons)),
    )
