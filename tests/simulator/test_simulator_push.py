"""App push (FCM HTTP v1) contract of the simulator, over real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from simulator_support import PUSH_PROJECT, PUSH_SECRET, RECEIPT_DELAY_S, push_message

from invoice_delivery import webhooks

SEND_URL = f"/v1/projects/{PUSH_PROJECT}/messages:send"
LOOKUP_URL = f"/v1/projects/{PUSH_PROJECT}/messages/by-idempotency-key"


def stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["push"]


def messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "push"}).json()


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["details"][0]["errorCode"]


def test_send_returns_message_name(push_client, control) -> None:
    response = push_client.post(SEND_URL, json=push_message(), headers={"Idempotency-Key": "inv-1-push-1"})

    assert response.status_code == 200
    name = response.json()["name"]
    assert name.startswith(f"projects/{PUSH_PROJECT}/messages/")
    [record] = messages(control)
    assert record["message_id"] == name
    assert record["idempotency_key"] == "inv-1-push-1"
    assert record["recipient"] == "fcm-installation-token-1"
    assert record["body"]["notification"]["title"] == "Ny faktura"
    counters = stats(control)
    assert counters["requests"] == 1
    assert counters["messages_accepted"] == 1
    assert sum(counters["accepted_per_second"].values()) == 1


def test_duplicate_key_returns_first_name(push_client, control) -> None:
    first = push_client.post(SEND_URL, json=push_message(), headers={"Idempotency-Key": "inv-1-push-1"})

    again = push_client.post(SEND_URL, json=push_message(token="other"), headers={"Idempotency-Key": "inv-1-push-1"})

    assert again.status_code == 200
    assert again.json()["name"] == first.json()["name"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(messages(control)) == 1
    assert stats(control)["duplicates_offered"] == 1


def test_send_without_key_is_not_deduplicated(push_client, control) -> None:
    first = push_client.post(SEND_URL, json=push_message())
    second = push_client.post(SEND_URL, json=push_message())

    assert first.json()["name"] != second.json()["name"]
    assert stats(control)["duplicates_offered"] == 0


@pytest.mark.parametrize("token", ["dead-4711", "token-of-uninstalled-app"])
def test_dead_token_unregistered(push_client, control, token) -> None:
    response = push_client.post(SEND_URL, json=push_message(token=token), headers={"Idempotency-Key": "k"})

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error_code(response) == "UNREGISTERED"
    assert token not in response.text
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


def test_rejected_recipient_fault_unregistered(push_client, control) -> None:
    control.post("/_sim/faults", json={"push": {"reject_recipients": ["live-token"]}})

    response = push_client.post(SEND_URL, json=push_message(token="live-token"))

    assert response.status_code == 404
    assert error_code(response) == "UNREGISTERED"
    assert stats(control)["faults_injected"] == {"reject_recipient": 1}


def test_injected_429_quota_exceeded(push_client, control) -> None:
    control.post("/_sim/faults", json={"push": {"rate_429": 1.0, "retry_after": 3}})

    response = push_client.post(SEND_URL, json=push_message())

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert error_code(response) == "QUOTA_EXCEEDED"
    assert messages(control) == []


def test_injected_5xx_unavailable(push_client, control) -> None:
    control.post("/_sim/faults", json={"push": {"error_5xx_rate": 1.0}})

    response = push_client.post(SEND_URL, json=push_message())

    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"
    assert messages(control) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": "t"}, "message"),
        (push_message(token=""), "message.token"),
        ({"message": {"topic": "news", "notification": {"title": "a", "body": "b"}}}, "message.token"),
        ({"message": {"token": "t"}}, "message.notification"),
        (push_message(notification={"title": "", "body": "b"}), "message.notification.title"),
        (push_message(data={"amount": 1234}), "message.data.amount"),
        (push_message(data={"google.sent_time": "1"}), "message.data.google.sent_time"),
        (push_message(data={"blob": "x" * 5000}), "message"),
    ],
)
def test_invalid_message_names_field(push_client, control, body, field) -> None:
    response = push_client.post(SEND_URL, json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    violations = [detail for detail in error["details"] if detail["@type"].endswith("BadRequest")]
    assert violations[0]["fieldViolations"][0]["field"] == field
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


def test_invalid_json_rejected(push_client) -> None:
    response = push_client.post(SEND_URL, content=b"{", headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic cHVzaDpwdXNo"])
def test_send_requires_bearer_token(simulator, control, authorization) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = httpx.post(f"{simulator.url}{SEND_URL}", json=push_message(), headers=headers, trust_env=False)

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert messages(control) == []


def test_other_project_forbidden(push_client) -> None:
    response = push_client.post("/v1/projects/other-project/messages:send", json=push_message())

    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "other-project" in response.json()["error"]["message"]


def test_lookup_by_idempotency_key(push_client) -> None:
    sent = push_client.post(SEND_URL, json=push_message(), headers={"Idempotency-Key": "inv-1-push-1"}).json()

    response = push_client.get(f"{LOOKUP_URL}/inv-1-push-1")

    assert response.status_code == 200
    record = response.json()
    assert record["name"] == sent["name"]
    assert record["idempotency_key"] == "inv-1-push-1"
    assert record["received_at"].endswith("Z")


def test_lookup_unknown_key_404(push_client) -> None:
    response = push_client.get(f"{LOOKUP_URL}/never-sent")

    assert response.status_code == 404
    assert "never-sent" in response.json()["error"]["message"]


def test_opened_receipt_signed(push_client, receiver) -> None:
    started = time.monotonic()
    sent = push_client.post(SEND_URL, json=push_message(), headers={"Idempotency-Key": "inv-1-push-1"}).json()

    [receipt] = receiver.wait_for(1, path="/receipts/push")

    webhooks.verify(PUSH_SECRET, receipt.headers, receipt.body)
    payload = json.loads(receipt.body)
    assert payload["event"] == "opened"
    assert payload["name"] == sent["name"]
    assert payload["timestamp"].endswith("Z")
    assert receipt.arrived_at - started >= RECEIPT_DELAY_S
    opened = push_client.get(f"{LOOKUP_URL}/inv-1-push-1").json()
    assert opened["opened_at"] is not None


def test_no_receipt_for_rejected_message(push_client, control, receiver) -> None:
    push_client.post(SEND_URL, json=push_message(token="dead-1"))

    time.sleep(RECEIPT_DELAY_S * 2)

    assert receiver.on_path("/receipts/push") == []
    assert control.get("/_sim/receipts", params={"channel": "push"}).json() == []
