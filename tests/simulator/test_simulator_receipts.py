"""Signed delivery reports from the simulator, received by a real HTTP server on loopback."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from simulator_support import RECEIPT_DELAY_S, SMS_AUTH, SMS_SECRET, free_port, simulator_config, sms_message

from invoice_delivery import webhooks
from invoice_delivery.simulator import SimulatorProcess


def receipts(control: httpx.Client, **params: str) -> list[dict]:
    return control.get("/_sim/receipts", params={"channel": "sms", **params}).json()


def wait_for_receipts(control: httpx.Client, status: str, count: int, timeout_s: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = receipts(control, status=status)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_delivery_report_signed_and_posted(sms_client, receiver) -> None:
    sent = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1")).json()

    [receipt] = receiver.wait_for(1)

    webhooks.verify(SMS_SECRET, receipt.headers, receipt.body)
    assert receipt.path == "/receipts"
    assert receipt.headers["content-type"] == "application/json"
    report = json.loads(receipt.body)
    assert report["refId"] == "inv-1-sms-1"
    assert report["id"] == sent["messageId"]
    assert report["resultCode"] == 1001
    assert report["operatorResultCode"] == "0"
    assert report["segments"] == 1
    assert report["operator"]
    assert report["sendTimestamp"] <= report["timestamp"]


def test_delivery_report_updates_lookup(sms_client, receiver) -> None:
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    receiver.wait_for(1)

    record = sms_client.get("/sms/messages/by-ref/inv-1-sms-1").json()
    assert record["resultCode"] == 1001
    assert record["description"] == "Delivered"


def test_delivery_report_arrives_after_delay(sms_client, receiver) -> None:
    started = time.monotonic()
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    receiver.wait_for(1)

    assert time.monotonic() - started >= RECEIPT_DELAY_S


def test_batch_reports_one_receipt_per_message(sms_client, receiver) -> None:
    batch = [sms_message(f"inv-{number}-sms-1") for number in range(50)]
    sms_client.post("/sms/sendbatch", json={"messages": batch})

    received = receiver.wait_for(50)

    ref_ids = {json.loads(receipt.body)["refId"] for receipt in received}
    assert ref_ids == {f"inv-{number}-sms-1" for number in range(50)}
    assert len({receipt.headers["webhook-id"] for receipt in received}) == 50


def test_tampered_receipt_fails_verification(sms_client, receiver) -> None:
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))
    [receipt] = receiver.wait_for(1)
    forged_body = receipt.body.replace(b"1001", b"1006")

    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(SMS_SECRET, receipt.headers, forged_body)
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify("whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", receipt.headers, receipt.body)
    with pytest.raises(webhooks.StaleTimestamp):
        webhooks.verify(SMS_SECRET, receipt.headers, receipt.body, now=int(time.time()) + 301)


def test_no_report_when_not_requested(sms_client, control, receiver) -> None:
    sms_client.post("/sms/send", json=sms_message("no-report", useDeliveryReport=False))
    sms_client.post("/sms/send", json=sms_message("with-report"))

    [receipt] = receiver.wait_for(1)
    time.sleep(RECEIPT_DELAY_S)

    assert json.loads(receipt.body)["refId"] == "with-report"
    assert len(receipts(control)) == 1


def test_failed_post_retried_with_same_id(sms_client, control, receiver) -> None:
    receiver.respond_next(500)
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    first, second = receiver.wait_for(2)

    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    webhooks.verify(SMS_SECRET, second.headers, second.body)
    [delivered] = wait_for_receipts(control, "delivered", 1)
    assert delivered["attempts"] == 2
    assert delivered["last_error"] == "receiver responded with HTTP 500"
    counters = control.get("/_sim/stats").json()["sms"]["receipts"]
    assert counters["retried"] == 1
    assert counters["delivered"] == 1


def test_receipt_failed_after_max_attempts(sms_client, control, receiver) -> None:
    receiver.respond_next(503, 503, 503)
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    receiver.wait_for(3)

    [failed] = wait_for_receipts(control, "failed", 1)
    assert failed["attempts"] == 3
    assert control.get("/_sim/stats").json()["sms"]["receipts"]["failed"] == 1


def test_duplicate_receipt_fault_sends_same_id_twice(sms_client, control, receiver) -> None:
    control.post("/_sim/faults", json={"sms": {"receipt_duplicate_rate": 1.0}})
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    first, second = receiver.wait_for(2)

    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert control.get("/_sim/stats").json()["sms"]["faults_injected"] == {"receipt_duplicate": 1}


def test_lost_receipt_fault_sends_nothing(sms_client, control, receiver) -> None:
    control.post("/_sim/faults", json={"sms": {"receipt_loss_rate": 1.0}})
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    [lost] = wait_for_receipts(control, "lost", 1)

    assert receiver.received == []
    assert lost["payload"]["resultCode"] == 1001
    assert sms_client.get("/sms/messages/by-ref/inv-1-sms-1").json()["resultCode"] == 1001


def test_reset_cancels_scheduled_receipts(sms_client, control, receiver) -> None:
    sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    control.post("/_sim/reset")
    time.sleep(RECEIPT_DELAY_S * 2)

    assert receiver.received == []
    assert receipts(control) == []


def test_outbox_keeps_signed_receipts_without_url() -> None:
    config = simulator_config(None, sms=simulator_config(None).sms.model_copy(update={"dlr_failure_rate": 1.0}))
    with SimulatorProcess(free_port(), config) as simulator:
        with httpx.Client(base_url=simulator.url, auth=SMS_AUTH, trust_env=False, timeout=10) as client:
            client.post("/sms/sendbatch", json={"messages": [sms_message("a"), sms_message("b")]})

            outbox = wait_for_receipts(client, "outbox", 2)

    assert [json.loads(item["body"])["refId"] for item in outbox] == ["a", "b"]
    for item in outbox:
        webhooks.verify(SMS_SECRET, item["headers"], item["body"].encode())
        assert item["payload"]["resultCode"] in (1006, 2104)
