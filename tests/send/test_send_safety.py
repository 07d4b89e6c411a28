"""Sending is safe under re-runs, crashes and rejections: real PostgreSQL, real simulator, real HTTP."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from invoice_delivery.channels import GatewayConfig
from invoice_delivery.channels.mailbox import MailboxClient
from invoice_delivery.channels.sms import SmsClient
from invoice_delivery.context import RunContext
from invoice_delivery.extract import extract_window
from invoice_delivery.ingest.generator import generate
from invoice_delivery.rendering import render_batch
from invoice_delivery.routing import route_batch
from invoice_delivery.send import send_batch
from invoice_delivery.simulator.config import SimulatorConfig
from invoice_delivery.simulator.process import SimulatorProcess
from invoice_delivery.validation import validate_batch
from tests.conftest import free_port

CTX = RunContext(dag_id="invoice_delivery", run_id="send-test", task_id="send")
SIM = SimulatorConfig()


@pytest.fixture
def simulator():
    with SimulatorProcess(free_port()) as process:
        yield process


def _clients(sim_url: str, **extra) -> dict:
    sms = GatewayConfig(base_url=sim_url, login=SIM.sms.username, password=SIM.sms.password,
                        max_attempts=2, timeout_s=5, extra={"source": "Invoices", **extra})
    mailbox = GatewayConfig(base_url=sim_url, login=SIM.mailbox.client_id, password=SIM.mailbox.client_secret,
                            max_attempts=2, timeout_s=5, extra={"tenant_key": SIM.mailbox.tenant_key, **extra})
    return {"sms": SmsClient(sms), "mailbox": MailboxClient(mailbox)}


@pytest.fixture
def rendered_batch(conn, simulator, monkeypatch):
    """Take generated invoices through extract, validate, route and render; return the batch id."""
    monkeypatch.setenv("INVOICE_DELIVERY_QUIET_HOURS", "off")
    now = datetime.now(UTC)
    generate(conn, 80, seed=31, ready_from=now - timedelta(minutes=5), ready_until=now - timedelta(seconds=1))
    [batch_id] = extract_window(conn, CTX, now - timedelta(minutes=5), now, batch_size=1000)
    validate_batch(conn, CTX, batch_id)
    clients = _clients(simulator.url)

    def matcher(numbers):
        import asyncio

        return asyncio.run(clients["mailbox"].match(numbers))

    route_batch(conn, CTX, batch_id, enabled=("sms", "mailbox"), mailbox_matcher=matcher)
    render_batch(conn, CTX, batch_id)
    conn.commit()
    return batch_id


def _stats(simulator) -> dict:
    return httpx.get(f"{simulator.url}/_sim/stats").json()


def _states(conn) -> dict[str, int]:
    return {r["state"]: r["n"] for r in conn.execute("SELECT state, count(*) AS n FROM delivery.delivery GROUP BY 1")}


def test_second_send_makes_no_gateway_calls(conn, simulator, rendered_batch):
    first = send_batch(conn, CTX, rendered_batch, _clients(simulator.url))
    before = _stats(simulator)

    second = send_batch(conn, CTX, rendered_batch, _clients(simulator.url))

    after = _stats(simulator)
    assert first["accepted"] > 0
    assert (second["accepted"], second["rejected"], second["unresolved"]) == (0, 0, 0)
    for channel in ("sms", "mailbox"):
        assert after[channel]["requests"] == before[channel]["requests"], f"{channel} was called again"


def test_chunked_render_and_send(conn, simulator, monkeypatch):
    monkeypatch.setenv("INVOICE_DELIVERY_QUIET_HOURS", "off")
    now = datetime.now(UTC)
    generate(conn, 30, seed=32, ready_from=now - timedelta(minutes=5), ready_until=now - timedelta(seconds=1))
    [batch_id] = extract_window(conn, CTX, now - timedelta(minutes=5), now, batch_size=1000)
    validate_batch(conn, CTX, batch_id)
    route_batch(conn, CTX, batch_id, enabled=("sms",))
    planned = _states(conn)["planned"]

    rendered = render_batch(conn, CTX, batch_id, chunk_size=4)
    conn.commit()
    before = _stats(simulator)["sms"]
    sent = send_batch(conn, CTX, batch_id, _clients(simulator.url), chunk_size=3)
    after = _stats(simulator)["sms"]

    assert planned > 8
    assert rendered == {"rendered": planned, "failed": 0, "deferred": 0}
    assert sent == {"accepted": planned, "rejected": 0, "next_attempts": 0, "unresolved": 0}
    assert _states(conn) == {"accepted": planned}
    assert after["messages_accepted"] - before["messages_accepted"] == planned
    assert after["requests"] - before["requests"] == -(-planned // 3)


def test_rejected_recipient_goes_to_next_channel(conn, simulator, rendered_batch):
    row = conn.execute(
        "SELECT d.invoice_id, c.mobile FROM delivery.delivery d JOIN billing.invoice i USING (invoice_id)"
        " JOIN billing.customer c USING (customer_id) JOIN delivery.document doc ON doc.invoice_id = d.invoice_id"
        " WHERE d.channel = 'sms' AND jsonb_array_length(doc.plan->'channels') > 1 LIMIT 1").fetchone()
    import phonenumbers

    e164 = phonenumbers.format_number(phonenumbers.parse(row["mobile"], "SE"), phonenumbers.PhoneNumberFormat.E164)
    httpx.post(f"{simulator.url}/_sim/faults", json={"sms": {"reject_recipients": [e164]}}).raise_for_status()

    send_batch(conn, CTX, rendered_batch, _clients(simulator.url))

    attempts = conn.execute("SELECT channel, attempt, state, reason FROM delivery.delivery WHERE invoice_id = %s"
                            " ORDER BY attempt", (row["invoice_id"],)).fetchall()
    assert attempts[0]["channel"] == "sms"
    assert attempts[0]["state"] == "failed"
    assert "2104" in attempts[0]["reason"] or "2105" in attempts[0]["reason"]
    assert attempts[1]["attempt"] == 2
    assert attempts[1]["state"] == "planned"
    assert attempts[1]["channel"] != "sms"


def test_gateway_down_leaves_rows_claimed_then_retry_resolves(conn, simulator, rendered_batch):
    httpx.post(f"{simulator.url}/_sim/faults",
               json={"sms": {"error_5xx_rate": 1.0}, "mailbox": {"error_5xx_rate": 1.0}}).raise_for_status()
    from invoice_delivery.channels import TransientGatewayError

    with pytest.raises(TransientGatewayError, match="received no response"):
        send_batch(conn, CTX, rendered_batch, _clients(simulator.url))
    assert _states(conn).get("sending", 0) > 0
    httpx.post(f"{simulator.url}/_sim/faults", json={"sms": {}, "mailbox": {}}).raise_for_status()

    send_batch(conn, CTX, rendered_batch, _clients(simulator.url))

    states = _states(conn)
    assert states.get("sending", 0) == 0
    assert states.get("rendered", 0) == 0
    assert sum(c["duplicates_offered"] for c in _stats(simulator).values() if isinstance(c, dict)) == 0


def _send_in_child(target, batch_id, sim_url):
    from invoice_delivery import db

    with db.connect(target) as conn:
        send_batch(conn, RunContext(dag_id="invoice_delivery", run_id="send-test", task_id="send", try_number=1),
                   batch_id, _clients(sim_url, concurrency=2))


def test_sigkill_mid_send_then_retry(conn, invoice_db, simulator, rendered_batch):
    httpx.post(f"{simulator.url}/_sim/faults",
               json={"mailbox": {"latency_ms": 400}, "sms": {"latency_ms": 400}}).raise_for_status()
    worker = multiprocessing.get_context("spawn").Process(
        target=_send_in_child, args=(invoice_db, rendered_batch, simulator.url))
    worker.start()
    deadline = time.monotonic() + 60
    while _states(conn).get("sending", 0) == 0:
        assert time.monotonic() < deadline, "the worker never claimed its rows"
        time.sleep(0.05)
    time.sleep(0.5)  # some requests reach the gateway, their replies never reach the worker
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    stuck = _states(conn).get("sending", 0)
    httpx.post(f"{simulator.url}/_sim/faults", json={"sms": {}, "mailbox": {}}).raise_for_status()

    retry = RunContext(dag_id="invoice_delivery", run_id="send-test", task_id="send", try_number=2)
    send_batch(conn, retry, rendered_batch, _clients(simulator.url))

    assert stuck > 0, "the kill came after the batch finished; nothing was tested"
    states = _states(conn)
    assert states.get("sending", 0) == 0, states
    assert states.get("rendered", 0) == 0, states
    stats = _stats(simulator)
    assert sum(c["duplicates_offered"] for c in stats.values() if isinstance(c, dict)) == 0
    accepted = conn.execute("SELECT channel, count(*) AS n FROM delivery.delivery"
                            " WHERE state = 'accepted' GROUP BY 1").fetchall()
    for row in accepted:
        assert stats[row["channel"]]["messages_accepted"] == row["n"], f"{row['channel']}: gateway and ledger differ"


def test_chunk_size_below_one_rejected(conn):
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        render_batch(conn, CTX, 1, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        send_batch(conn, CTX, 1, {}, chunk_size=0)
