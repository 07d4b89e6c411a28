"""Run invoice_delivery through Airflow against embedded PostgreSQL and the gateway simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from invoice_delivery import devenv, reports
from invoice_delivery.ingest.generator import generate
from invoice_delivery.ingest.ubl import ingest_files

pytestmark = pytest.mark.e2e

GENERATED = 300


def _dags_test(env, tmp_path, name="dags-test.log"):
    devenv.run_airflow(["dags", "test", "invoice_delivery"], env, log_file=tmp_path / name)


def test_every_document_accounted_for(conn, airflow_env, simulator, peppol_samples, tmp_path):
    now = datetime.now(UTC)
    ingest_files(conn, peppol_samples, ready_at=now - timedelta(minutes=3))
    generate(conn, GENERATED, seed=7, ready_from=now - timedelta(minutes=4), ready_until=now - timedelta(seconds=1))
    conn.commit()
    httpx.post(f"{simulator.url}/_sim/reset").raise_for_status()

    _dags_test(airflow_env, tmp_path)

    documents = conn.execute(
        "SELECT doc.invoice_id, doc.status, doc.reason,"
        " (SELECT d.state FROM delivery.delivery d WHERE d.invoice_id = doc.invoice_id"
        "  ORDER BY attempt DESC LIMIT 1) AS latest_state"
        " FROM delivery.document doc"
    ).fetchall()
    assert len(documents) == len(peppol_samples) + GENERATED
    for doc in documents:
        if doc["status"] in ("quarantined", "unroutable"):
            assert doc["reason"], f"invoice {doc['invoice_id']} is {doc['status']} without a reason"
        else:
            assert doc["latest_state"] in ("accepted", "delivered"), doc

    routed = {d["invoice_id"] for d in documents if d["latest_state"] in ("accepted", "delivered")}
    assert len(routed) > GENERATED // 2
    stats = httpx.get(f"{simulator.url}/_sim/stats").json()
    channels = ("sms", "mailbox", "push", "email", "einvoice", "paper")
    messages = sum(len(httpx.get(f"{simulator.url}/_sim/messages", params={"channel": c}).json())
                   for c in channels)
    assert messages == len(routed), "the simulator must hold exactly one message per routed invoice"
    assert sum(channel.get("duplicates_offered", 0) for channel in stats.values() if isinstance(channel, dict)) == 0

    accepted_ids = conn.execute(
        "SELECT gateway_message_id FROM delivery.delivery WHERE state IN ('accepted', 'delivered')"
    ).fetchall()
    assert len({row["gateway_message_id"] for row in accepted_ids}) == len(routed)


def test_payment_demands_only_for_positive_invoices(conn, airflow_env, simulator, peppol_samples, tmp_path):
    now = datetime.now(UTC)
    generate(conn, 200, seed=11, ready_from=now - timedelta(minutes=4), ready_until=now - timedelta(seconds=1))
    # Make sure some routable customers receive credit notes, whatever the generator drew.
    conn.execute(
        "UPDATE billing.invoice SET document_type = 'credit_note', type_code = '381', due_date = NULL"
        " WHERE invoice_id IN (SELECT i.invoice_id FROM billing.invoice i JOIN billing.customer c USING (customer_id)"
        " WHERE 'sms' = ANY(c.consents) AND c.mobile IS NOT NULL ORDER BY i.invoice_id LIMIT 5)"
    )
    conn.commit()

    _dags_test(airflow_env, tmp_path)

    rows = conn.execute(
        "SELECT i.document_type, i.payable, doc.purpose, d.channel, m.body"
        " FROM delivery.delivery d JOIN delivery.document doc USING (invoice_id)"
        " JOIN billing.invoice i USING (invoice_id) JOIN delivery.message m USING (delivery_id)"
    ).fetchall()
    informational = [r for r in rows if r["document_type"] == "credit_note" or r["payable"] <= 0]
    assert informational, "the generator must produce credit notes or zero amounts for this check"
    for row in rows:
        body = bytes(row["body"]).decode("utf-8", "replace")  # PDF bodies are binary; their text is compressed
        if row in informational:
            assert row["purpose"] == "informational"
            assert "payment_multiple_options" not in body
            assert "pay.example.com" not in body
        else:
            assert row["purpose"] == "payment_demand"


def test_rerun_sends_nothing_twice(conn, airflow_env, simulator, tmp_path):
    now = datetime.now(UTC)
    generate(conn, 50, seed=3, ready_from=now - timedelta(minutes=4), ready_until=now - timedelta(seconds=1))
    conn.commit()
    _dags_test(airflow_env, tmp_path, "first.log")
    before = httpx.get(f"{simulator.url}/_sim/stats").json()

    _dags_test(airflow_env, tmp_path, "second.log")

    after = httpx.get(f"{simulator.url}/_sim/stats").json()
    for channel in ("sms", "mailbox", "push", "email", "einvoice", "paper"):
        assert after[channel]["messages_accepted"] == before[channel]["messages_accepted"]
    assert conn.execute("SELECT count(*) AS n FROM delivery.batch").fetchone()["n"] >= 1
    assert reports.status_counts(conn)["total"] == 50
