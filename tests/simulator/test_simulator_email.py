"""E-mail contract of the simulator: real SMTP sessions (smtplib), HTTP lookup and signed receipts."""

from __future__ import annotations

import email.policy
import json
import smtplib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from simulator_support import (
    EMAIL_AUTH,
    EMAIL_SECRET,
    RECEIPT_DELAY_S,
    email_message,
    free_port,
    simulator_config,
)

from invoice_delivery import webhooks
from invoice_delivery.simulator import SimulatorProcess

LOOKUP_URL = "/email/messages/by-message-id"


def stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["email"]


def messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "email"}).json()


def set_faults(control: httpx.Client, faults: dict) -> None:
    response = control.post("/_sim/faults", json={"email": faults})
    assert response.status_code == 200, response.text


def wait_for_outbox(client: httpx.Client, count: int, timeout_s: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = client.get("/_sim/receipts", params={"channel": "email", "status": "outbox"}).json()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_message_recorded(smtp, control) -> None:
    refused = smtp.send_message(email_message("inv-1-email-1"))

    assert refused == {}
    [record] = messages(control)
    assert record["message_id"] == "inv-1-email-1@invoice-delivery"
    assert record["idempotency_key"] == "inv-1-email-1"
    assert record["recipient"] == "kund@example.se"
    body = record["body"]
    assert body["mail_from"] == "faktura@example.com"
    assert body["rcpt_to"] == ["kund@example.se"]
    assert body["from"] == "Nordlys Energi <faktura@example.com>"
    assert body["to"] == "kund@example.se"
    assert body["subject"] == "Din faktura från Nordlys Energi"
    assert body["message_id"] == "inv-1-email-1@invoice-delivery"
    assert body["size"] > 0
    assert body["content_types"] == ["text/plain", "text/html", "application/pdf"]
    assert body["has_pdf_attachment"] is True
    assert body["text"].startswith("Din faktura på 1 234,50 kr")
    assert body["queue_id"]
    counters = stats(control)
    assert counters["requests"] == 1
    assert counters["messages_accepted"] == 1
    assert sum(counters["accepted_per_second"].values()) == 1


def test_message_without_attachment(smtp, control) -> None:
    smtp.send_message(email_message("inv-1-email-1", with_pdf=False))

    [record] = messages(control)
    assert record["body"]["has_pdf_attachment"] is False
    assert record["body"]["content_types"] == ["text/plain", "text/html"]


def test_queued_reply_names_queue_id(smtp, control) -> None:
    message = email_message("inv-1-email-1")
    smtp.ehlo()
    smtp.mail("faktura@example.com")
    smtp.rcpt("kund@example.se")

    code, reply = smtp.data(message.as_bytes(policy=email.policy.SMTP))

    assert code == 250
    queue_id = messages(control)[0]["body"]["queue_id"]
    assert reply.decode() == f"2.0.0 Ok: queued as {queue_id}"


def test_duplicate_message_id_not_recorded_twice(smtp, control) -> None:
    smtp.send_message(email_message("inv-1-email-1"))
    smtp.mail("faktura@example.com")
    smtp.rcpt("kund@example.se")

    code, reply = smtp.data(email_message("inv-1-email-1").as_bytes(policy=email.policy.SMTP))

    assert code == 250
    assert b"duplicate" in reply
    assert len(messages(control)) == 1
    counters = stats(control)
    assert counters["duplicates_offered"] == 1
    assert counters["messages_accepted"] == 1


def test_missing_message_id_rejected(smtp, control) -> None:
    message = email_message("x")
    del message["Message-ID"]

    with pytest.raises(smtplib.SMTPDataError) as raised:
        smtp.send_message(message)

    assert raised.value.smtp_code == 550
    assert b"Message-ID" in raised.value.smtp_error
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


@pytest.mark.parametrize(
    ("fault_list", "enhanced_code"),
    [("reject_recipients", b"5.1.1"), ("block_recipients", b"5.7.1")],
)
def test_rejected_recipient_550(smtp, control, fault_list, enhanced_code) -> None:
    set_faults(control, {fault_list: ["gone@example.se"]})

    with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
        smtp.send_message(email_message("inv-1-email-1", to="gone@example.se"))

    code, reply = raised.value.recipients["gone@example.se"]
    assert code == 550
    assert reply.startswith(enhanced_code)
    assert b"gone@example.se" not in reply
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


@pytest.mark.parametrize(
    ("faults", "enhanced_code"),
    [
        ({"error_5xx_rate": 1.0}, b"4.3.0"),
        ({"rate_429": 1.0, "retry_after": 2}, b"4.7.1"),
    ],
)
def test_injected_fault_is_451(smtp, control, faults, enhanced_code) -> None:
    set_faults(control, faults)

    with pytest.raises(smtplib.SMTPDataError) as raised:
        smtp.send_message(email_message("inv-1-email-1"))

    assert raised.value.smtp_code == 451
    assert raised.value.smtp_error.startswith(enhanced_code)
    assert messages(control) == []


def test_retry_after_451_accepted(smtp, control) -> None:
    set_faults(control, {"error_5xx_rate": 1.0, "max_request_faults": 1})
    with pytest.raises(smtplib.SMTPDataError):
        smtp.send_message(email_message("inv-1-email-1"))

    refused = smtp.send_message(email_message("inv-1-email-1"))

    assert refused == {}
    assert len(messages(control)) == 1
    counters = stats(control)
    assert counters["faults_injected"] == {"error_5xx": 1}
    assert counters["duplicates_offered"] == 0


def test_timeout_after_accept_then_duplicate(simulator, control) -> None:
    set_faults(control, {"timeout_rate": 1.0, "timeout_hold_s": 1.0, "timeout_after_accept": True})
    with smtplib.SMTP(simulator.host, simulator.smtp_port, timeout=0.3) as session:
        with pytest.raises((TimeoutError, socket.timeout, smtplib.SMTPServerDisconnected)):
            session.send_message(email_message("inv-1-email-1"))
    set_faults(control, {})

    with smtplib.SMTP(simulator.host, simulator.smtp_port, timeout=5) as session:
        session.send_message(email_message("inv-1-email-1"))

    assert len(messages(control)) == 1
    assert stats(control)["duplicates_offered"] == 1


def test_auth_with_configured_credentials(simulator, control) -> None:
    with smtplib.SMTP(simulator.host, simulator.smtp_port, timeout=5) as session:
        code, _ = session.login(*EMAIL_AUTH)
        session.send_message(email_message("inv-1-email-1"))

    assert code == 235
    assert len(messages(control)) == 1


def test_auth_with_wrong_password_535(simulator) -> None:
    with smtplib.SMTP(simulator.host, simulator.smtp_port, timeout=5) as session:
        with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
            session.login(EMAIL_AUTH[0], "wrong")

    assert raised.value.smtp_code == 535


@pytest.mark.parametrize(
    "value",
    ["inv-1-email-1", "inv-1-email-1@invoice-delivery", "<inv-1-email-1@invoice-delivery>"],
)
def test_lookup_by_message_id(smtp, email_lookup, value) -> None:
    smtp.send_message(email_message("inv-1-email-1"))

    response = email_lookup.get(f"{LOOKUP_URL}/{value}")

    assert response.status_code == 200
    record = response.json()
    assert record["message_id"] == "inv-1-email-1@invoice-delivery"
    assert record["idempotency_key"] == "inv-1-email-1"
    assert record["status"] == "queued"
    assert record["bounce_type"] is None
    assert record["queue_id"]


def test_lookup_unknown_404(email_lookup) -> None:
    response = email_lookup.get(f"{LOOKUP_URL}/never-sent")

    assert response.status_code == 404
    assert response.json()["code"] == "message_not_found"


@pytest.mark.parametrize("auth", [None, (EMAIL_AUTH[0], "wrong")])
def test_lookup_requires_basic_auth(simulator, auth) -> None:
    response = httpx.get(f"{simulator.url}{LOOKUP_URL}/x", auth=auth, trust_env=False)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


def test_delivered_receipt_signed(smtp, email_lookup, receiver) -> None:
    started = time.monotonic()
    smtp.send_message(email_message("inv-1-email-1"))

    [receipt] = receiver.wait_for(1, path="/receipts/email")

    webhooks.verify(EMAIL_SECRET, receipt.headers, receipt.body)
    payload = json.loads(receipt.body)
    assert payload["event"] == "delivered"
    assert payload["message_id"] == "inv-1-email-1@invoice-delivery"
    assert payload["bounce_type"] is None
    assert payload["status"] == "2.0.0"
    assert payload["queue_id"]
    assert receipt.arrived_at - started >= RECEIPT_DELAY_S
    assert email_lookup.get(f"{LOOKUP_URL}/inv-1-email-1").json()["status"] == "delivered"


def test_no_receipt_for_duplicate(smtp, receiver) -> None:
    smtp.send_message(email_message("inv-1-email-1"))
    smtp.send_message(email_message("inv-1-email-1"))

    receiver.wait_for(1, path="/receipts/email")
    time.sleep(RECEIPT_DELAY_S * 2)

    assert len(receiver.on_path("/receipts/email")) == 1


@pytest.fixture(scope="module")
def bouncing_simulator() -> Iterator[SimulatorProcess]:
    """A simulator whose e-mail needs AUTH and bounces every message, half hard and half soft."""
    base = simulator_config(None)
    email = base.email.model_copy(update={"hard_bounce_rate": 0.5, "soft_bounce_rate": 0.5, "auth_required": True})
    with SimulatorProcess(free_port(), base.model_copy(update={"email": email})) as process:
        yield process


def test_bounce_receipts_hard_and_soft(bouncing_simulator) -> None:
    sim = bouncing_simulator
    with smtplib.SMTP(sim.host, sim.smtp_port, timeout=5) as session:
        session.login(*EMAIL_AUTH)
        for number in range(20):
            session.send_message(email_message(f"inv-{number}-email-1"))

    with httpx.Client(base_url=sim.url, trust_env=False, timeout=10) as client:
        outbox = wait_for_outbox(client, 20)
        records = client.get("/_sim/messages", params={"channel": "email"}).json()

    payloads = [item["payload"] for item in outbox]
    assert {payload["event"] for payload in payloads} == {"bounce"}
    assert {payload["bounce_type"] for payload in payloads} == {"hard", "soft"}
    for item in outbox:
        webhooks.verify(EMAIL_SECRET, item["headers"], item["body"].encode())
        expected_status = "5.1.1" if item["payload"]["bounce_type"] == "hard" else "4.2.2"
        assert item["payload"]["status"] == expected_status
    assert {record["status"]["status"] for record in records} == {"bounced"}


def test_auth_required_rejects_anonymous(bouncing_simulator) -> None:
    sim = bouncing_simulator
    with smtplib.SMTP(sim.host, sim.smtp_port, timeout=5) as session:
        with pytest.raises(smtplib.SMTPSenderRefused) as raised:
            session.send_message(email_message("inv-1-email-1"))

    assert raised.value.smtp_code == 530
