"""The audit command line against a real invoice database: exports and usage errors."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

import pytest

from invoice_delivery import cli, ledger
from invoice_delivery.context import RunContext


@pytest.fixture
def cli_env(monkeypatch, postgres, invoice_db):
    """Point the command line at the test's invoice database instead of the embedded default."""
    monkeypatch.setenv("AIRFLOW_CONN_INVOICE_DB", invoice_db.airflow_uri())
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", postgres.target("postgres").sqlalchemy_url())
    return invoice_db


def _record(conn) -> None:
    ctx = RunContext(dag_id="invoice_delivery", run_id="cli-test", task_id="extract")
    ledger.record_events(conn, ctx, "extracted", [{"invoice_id": 7, "to_state": "extracted",
                                                   "details": {"batch_id": 3}}])
    conn.commit()


def test_export_formats_share_timestamps(cli_env, conn, tmp_path):
    _record(conn)
    today = datetime.now(UTC).date().isoformat()
    jsonl, table = tmp_path / "audit.jsonl", tmp_path / "audit.csv"

    assert cli.main(["audit", "--from", today, "--to", today, "--format", "jsonl", "--output", str(jsonl)]) == 0
    assert cli.main(["audit", "--from", today, "--to", today, "--format", "csv", "--output", str(table)]) == 0

    [event] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    [row] = list(csv.DictReader(table.open()))
    assert event["occurred_at"] == row["occurred_at"]
    assert datetime.fromisoformat(event["occurred_at"]).tzinfo is not None
    assert event["details"] == {"batch_id": 3}
    assert json.loads(row["details"]) == {"batch_id": 3}


def test_invalid_date_exits_2(cli_env, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["audit", "--from", "2026-13-01", "--to", "2026-12-31"])

    assert raised.value.code == 2
    assert "--from '2026-13-01' is not a date; use YYYY-MM-DD" in capsys.readouterr().err


def test_reversed_period_exits_2(cli_env, capsys):
    code = cli.main(["audit", "--from", "2026-12-04", "--to", "2026-12-01"])

    assert code == 2
    assert "is before --from" in capsys.readouterr().err
