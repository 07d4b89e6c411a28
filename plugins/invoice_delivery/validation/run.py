"""Validate one batch: run the suite, quarantine failing invoices with reasons, store the result."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psycopg

from invoice_delivery import ledger
from invoice_delivery.context import RunContext
from invoice_delivery.masking import project_logger
from invoice_delivery.validation.rules import add_rule_columns, shown_value
from invoice_delivery.validation.suite import Expectation, build_expectations, run_suite

log = project_logger(__name__)

_FRAME_SQL = """
SELECT i.invoice_id, i.invoice_number, i.seller_id, i.customer_id, i.document_type, i.issue_date,
       i.due_date, i.currency, i.net_total, i.vat_total, i.gross_total, i.prepaid, i.rounding, i.payable,
       i.ocr_reference, i.updated_at, s.country AS seller_country,
       c.customer_id IS NOT NULL AS customer_found, c.mobile, c.email, c.personal_number,
       c.country AS customer_country
FROM delivery.batch_item bi
JOIN delivery.document d ON d.invoice_id = bi.invoice_id AND d.status = 'extracted'
JOIN billing.invoice i ON i.invoice_id = bi.invoice_id
JOIN billing.seller s ON s.seller_id = i.seller_id
LEFT JOIN billing.customer c ON c.customer_id = i.customer_id
WHERE bi.batch_id = %s
ORDER BY i.invoice_id
"""


@dataclass
class ValidationOutcome:
    """Counts of one batch's validation; ids only, so it can travel in XCom."""

    batch_id: int
    validated: int = 0
    passed: int = 0
    quarantined: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


def load_frame(conn: psycopg.Connection, batch_id: int) -> pd.DataFrame:
    cursor = conn.execute(_FRAME_SQL, (batch_id,))
    columns = [column.name for column in cursor.description]
    return pd.DataFrame(cursor.fetchall(), columns=columns)


def failures_by_invoice(result: Any, expectations: list[Expectation], frame: pd.DataFrame) -> dict[int, list[dict]]:
    """Turn the GX result into ``{invoice_id: [reason, ...]}`` for the failing rows."""
    values = frame.set_index("invoice_id")
    reasons: dict[int, list[dict]] = defaultdict(list)
    for expectation, outcome in zip(expectations, result.results, strict=True):
        if outcome.success:
            continue
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
    frame = load_frame(conn, batch_id)
    outcome = ValidationOutcome(batch_id=batch_id, validated=len(frame))
    if frame.empty:
        log.info("Batch %s: nothing to validate", batch_id)
        return outcome

    frame = add_rule_columns(frame)
    expectations = build_expectations()
    result = run_suite(frame, expectations)
    reasons = failures_by_invoice(result, expectations, frame)

    _quarantine(conn, ctx, frame, reasons)
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
