"""Receipts that reach the receiver before the reply to the send request that caused them.

Each test checks the receiver right after the reply, without waiting: an early receipt must be
there already.
"""

from __future__ import annotations

import json

import httpx
from simulator_support import (
    EINVOICE_SECRET,
    EMAIL_SECRET,
    PUSH_PROJECT,
    PUSH_SECRET,
    SMS_SECRET,
    einvoice_headers,
    email_message,
    push_message,
    sms_message,
    ubl_invoice,
)

from invoice_delivery import webhooks


def early_faults(control: httpx.Client, channel: str, **extra: float) -> None:
    response = control.post("/_sim/faults", json={channel: {"receipt_early_rate": 1.0, **extra}})
    assert response.status_code == 200, response.text


def test_sms_report_before_reply(sms_client, control, receiver) -> None:
    early_faults(control, "sms")

    reply = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1")).json()

    [receipt] = receiver.on_path("/receipts")
    webhooks.verify(SMS_SECRET, receipt.headers, receipt.body)
    assert json.loads(receipt.body)["id"] == reply["messageId"]
    [delivery] = control.get("/_sim/receipts", params={"channel": "sms"}).json()
    assert delivery["early"] is True
    assert control.get("/_sim/stats").json()["sms"]["faults_injected"] == {"receipt_early": 1}


def test_sms_batch_reports_before_reply(sms_client, control, receiver) -> None:
    early_faults(control, "sms")
    batch = [sms_message(f"inv-{number}-sms-1") for number in range(5)]

    sms_client.post("/sms/sendbatch", json={"messages": batch})

    assert len(receiver.on_path("/receipts")) == 5


def test_push_opened_before_reply(push_client, control, receiver) -> None:
    early_faults(control, "push")

    reply = push_client.post(f"/v1/projects/{PUSH_PROJECT}/messages:send", json=push_message()).json()

    [receipt] = receiver.on_path("/receipts/push")
    webhooks.verify(PUSH_SECRET, receipt.headers, receipt.body)
    assert json.loads(receipt.body)["name"] == reply["name"]


def test_email_receipt_before_smtp_reply(smtp, control, receiver) -> None:
    early_faults(control, "email")

    smtp.send_message(email_message("inv-1-email-1"))

    [receipt] = receiver.on_path("/receipts/email")
    webhooks.verify(EMAIL_SECRET, receipt.headers, receipt.body)
    assert json.loads(receipt.body)["message_id"] == "inv-1-email-1@invoice-delivery"


def test_einvoice_only_acknowledgement_early(einvoice_client, control, receiver) -> None:
    early_faults(control, "einvoice")

    reply = einvoice_client.post("/documents", content=ubl_invoice(), headers=einvoice_headers("k")).json()

    [acknowledged] = receiver.on_path("/receipts/einvoice")
    webhooks.verify(EINVOICE_SECRET, acknowledged.headers, acknowledged.body)
    payload = json.loads(acknowledged.body)
    assert payload["status"] == "AB"
    assert payload["transmission_id"] == reply["transmission_id"]
    _, accepted = receiver.wait_for(2, path="/receipts/einvoice")
    assert json.loads(accepted.body)["status"] == "AP"
    assert control.get("/_sim/stats").json()["einvoice"]["faults_injected"] == {"receipt_early": 1}


def test_early_receipt_ignores_jitter(sms_client, control, receiver) -> None:
    early_faults(control, "sms", receipt_jitter_s=5.0)

    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    [delivery] = control.get("/_sim/receipts", params={"channel": "sms"}).json()
    assert delivery["status"] == "delivered"
    assert len(receiver.on_path("/receipts")) == 1


def test_failed_early_post_does_not_block_reply(sms_client, control, receiver) -> None:
    early_faults(control, "sms")
    receiver.respond_next(500)

    reply = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    assert reply.status_code == 202
    first, second = receiver.wait_for(2, path="/receipts")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_lost_receipt_is_never_early(sms_client, control, receiver) -> None:
    early_faults(control, "sms", receipt_loss_rate=1.0)

    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    assert receiver.on_path("/receipts") == []
    counters = control.get("/_sim/stats").json()["sms"]["faults_injected"]
    assert counters == {"receipt_lost": 1}


def test_duplicate_copy_follows_early_one(sms_client, control, receiver) -> None:
    early_faults(control, "sms", receipt_duplicate_rate=1.0)

    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    assert receiver.on_path("/receipts") != []
    first, second = receiver.wait_for(2, path="/receipts")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
