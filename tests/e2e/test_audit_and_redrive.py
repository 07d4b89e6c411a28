"""Compliance and operations through real Airflow: log scan, redelivery form, backfill."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import phonenumbers
import psycopg
import pytest

from invoice_delivery import devenv
from invoice_delivery.ingest.generator import generate

pytestmark = pytest.mark.e2e


def _run(env, args, tmp_path, name, check=True):
    return devenv.run_airflow(args, env, log_file=tmp_path / name, check=check)


def _personal_values(conn) -> set[str]:
    """Every written form of the customers' phone numbers, e-mail addresses and personal numbers."""
    values: set[str] = set()
    for row in conn.execute("SELECT mobile, email, personal_number FROM billing.customer"):
        for value in (row["email"], row["personal_number"]):
            if value:
                values.add(value)
        if row["personal_number"]:
            values.add(row["personal_number"][2:])  # the 10-digit form
        if row["mobile"]:
            values.add(row["mobile"])
            number = phonenumbers.parse(row["mobile"], "SE")
            values.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
            values.add("0" + str(number.national_number))
    return values


def test_task_logs_hold_no_personal_data(conn, airflow_env, airflow_home, tmp_path):
    now = datetime.now(UTC)
    generate(conn, 120, seed=17, ready_from=now - timedelta(minutes=4), ready_until=now - timedelta(seconds=1))
    conn.execute("UPDATE billing.customer SET mobile = '070-12' WHERE customer_id IN"
                 " (SELECT customer_id FROM billing.customer ORDER BY 1 LIMIT 3)")
    conn.commit()

    _run(airflow_env, ["dags", "test", "invoice_delivery"], tmp_path, "run.log")

    values = _personal_values(conn)
    assert len(values) > 300
    log_files = [tmp_path / "run.log", *(airflow_home / "logs").rglob("*")]
    scanned = 0
    for path in log_files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        scanned += 1
        found = sorted(value for value in values if value in text)
        assert not found, f"{path} contains personal data: {found[:5]}"
    assert scanned >= 1
    # The run did log per-invoice facts, by id.
    assert re.search(r"quarantined invoice ids: \[\d+", (tmp_path / "run.log").read_text())


def _trigger_redelivery(env, tmp_path, name, conf, check=True):
    return _run(env, ["dags", "test", "invoice_redelivery", "-c", json.dumps(conf)], tmp_path, name, check=check)


def _fail_every_sms(simulator):
    numbers = [f"+4670174{n:04d}" for n in range(605, 700)]
    httpx.post(f"{simulator.url}/_sim/faults", json={"sms": {"reject_recipients": numbers}}).raise_for_status()


def _clear_faults(simulator):
    httpx.post(f"{simulator.url}/_sim/faults", json={"sms": {}}).raise_for_status()


def _accepted_sms(simulator) -> int:
    return httpx.get(f"{simulator.url}/_sim/stats").json()["sms"]["messages_accepted"]


@pytest.fixture
def sms_only_env(airflow_env):
    """Send on SMS only; the same dict reaches the scheduler fixture, so its task processes agree."""
    airflow_env["INVOICE_DELIVERY_CHANNELS"] = "sms"
    return airflow_env


def test_redelivery_dry_run_then_real(conn, sms_only_env, simulator, tmp_path):
    now = datetime.now(UTC)
    generate(conn, 40, seed=23, ready_from=now - timedelta(minutes=4), ready_until=now - timedelta(seconds=1))
    conn.commit()
    httpx.post(f"{simulator.url}/_sim/reset").raise_for_status()
    _fail_every_sms(simulator)
    _run(sms_only_env, ["dags", "test", "invoice_delivery"], tmp_path, "first.log")
    failed = conn.execute("SELECT count(*) AS n FROM delivery.document WHERE status = 'failed'").fetchone()["n"]
    assert failed > 0
    _clear_faults(simulator)
    before = _accepted_sms(simulator)
    today = now.date().isoformat()
    conf = {"from_date": today, "to_date": today, "states": ["failed"], "reason": "SMS gateway outage fixed"}

    _trigger_redelivery(sms_only_env, tmp_path, "dry.log", {**conf, "dry_run": True})

    assert _accepted_sms(simulator) == before
    assert conn.execute("SELECT count(*) AS n FROM delivery.document WHERE status = 'failed'").fetchone()["n"] == failed
    dry = conn.execute("SELECT * FROM delivery.audit_event WHERE event_type = 'redelivery_dry_run'").fetchone()
    assert dry["details"]["counts"]["failed"] == failed
    assert dry["reason"] == "SMS gateway outage fixed"
    assert dry["actor"]

    _trigger_redelivery(sms_only_env, tmp_path, "real.log", {**conf, "dry_run": False})

    assert _accepted_sms(simulator) == before + failed
    assert conn.execute("SELECT count(*) AS n FROM delivery.document WHERE status = 'failed'").fetchone()["n"] == 0
    events = conn.execute("SELECT actor, reason FROM delivery.audit_event WHERE event_type = 'redelivery'").fetchall()
    assert len(events) == failed
    assert {e["reason"] for e in events} == {"SMS gateway outage fixed"}
    stats = httpx.get(f"{simulator.url}/_sim/stats").json()
    assert stats["sms"]["duplicates_offered"] == 0


def test_redelivery_form_requires_reason(sms_only_env, tmp_path):
    today = datetime.now(UTC).date().isoformat()

    result = _trigger_redelivery(sms_only_env, tmp_path, "no-reason.log",
                                 {"from_date": today, "to_date": today}, check=False)

    assert result.returncode != 0
    assert "reason" in (tmp_path / "no-reason.log").read_text()


def _wait_for_backfill(metadata, dag_id, expected_runs, timeout_s=600):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(metadata.conninfo()) as meta:
            states = [row[0] for row in meta.execute(
                "SELECT state FROM dag_run WHERE dag_id = %s AND run_type = 'backfill'", (dag_id,))]
        if len(states) >= expected_runs and all(s in ("success", "failed") for s in states):
            return states
        time.sleep(2)
    raise AssertionError(f"backfill of {dag_id} did not finish in {timeout_s}s: {states}")


def test_backfill_redrives_failed_and_skips_delivered(conn, sms_only_env, simulator, scheduler, airflow_metadata,
                                                       tmp_path):
    window_start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    generate(conn, 30, seed=29, ready_from=window_start, ready_until=window_start + timedelta(minutes=10))
    bad = conn.execute("SELECT invoice_id FROM billing.invoice ORDER BY 1 LIMIT 2").fetchall()
    conn.execute("UPDATE billing.invoice SET currency = 'XXQ' WHERE invoice_id = ANY(%s)",
                 ([r["invoice_id"] for r in bad],))
    conn.commit()
    httpx.post(f"{simulator.url}/_sim/reset").raise_for_status()
    numbers = [f"+4670174{n:04d}" for n in range(605, 650)]
    httpx.post(f"{simulator.url}/_sim/faults", json={"sms": {"reject_recipients": numbers}}).raise_for_status()
    _run(sms_only_env, ["dags", "test", "invoice_delivery"], tmp_path, "first.log")
    status = {r["status"]: r["n"] for r in conn.execute(
        "SELECT status, count(*) AS n FROM delivery.document GROUP BY status")}
    assert status.get("failed")
    assert status.get("quarantined") == 2
    assert status.get("in_progress")
    conn.execute("UPDATE billing.invoice SET currency = 'SEK' WHERE invoice_id = ANY(%s)",
                 ([r["invoice_id"] for r in bad],))  # corrected in the source, validated again by the backfill
    conn.commit()
    _clear_faults(simulator)
    before = _accepted_sms(simulator)
    scheduler()

    _run(sms_only_env, ["backfill", "create", "--dag-id", "invoice_delivery",
                        "--from-date", window_start.isoformat(),
                        "--to-date", (window_start + timedelta(minutes=10)).isoformat()], tmp_path, "backfill.log")
    states = _wait_for_backfill(airflow_metadata, "invoice_delivery", expected_runs=2)

    assert set(states) == {"success"}
    stats = httpx.get(f"{simulator.url}/_sim/stats").json()
    assert stats["sms"]["duplicates_offered"] == 0
    redriven = conn.execute(
        "SELECT invoice_id, state FROM delivery.delivery WHERE created_run_id LIKE 'backfill%%'").fetchall()
    assert len({r["invoice_id"] for r in redriven}) >= status["failed"]
    assert _accepted_sms(simulator) == before + sum(1 for r in redriven if r["state"] in ("accepted", "delivered"))
    after = {r["status"]: r["n"] for r in conn.execute(
        "SELECT status, count(*) AS n FROM delivery.document GROUP BY status")}
    assert after.get("failed", 0) == 0
    assert after.get("quarantined", 0) == 0
    first_accepted = conn.execute(
        "SELECT count(*) AS n FROM delivery.delivery d WHERE d.attempt > 1 AND EXISTS (SELECT 1 FROM"
        " delivery.delivery e WHERE e.invoice_id = d.invoice_id AND e.attempt = 1 AND e.state = 'accepted')"
    ).fetchone()["n"]
    assert first_accepted == 0, "an invoice accepted in the first run was sent again"
