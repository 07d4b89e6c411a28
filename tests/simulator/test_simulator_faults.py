"""Fault injection of the simulator: 5xx, 429, timeouts, latency and rejected recipients."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx
import pytest
from simulator_support import (
    SMS_AUTH,
    TENANT,
    invoice_content,
    make_ocr,
    make_personal_number,
    simulator_config,
    sms_message,
)

from invoice_delivery.simulator.mailbox import has_mailbox


def set_faults(control: httpx.Client, faults: dict) -> dict:
    response = control.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text
    return response.json()


def sms_stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["sms"]


def sms_messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "sms"}).json()


def test_injected_5xx_records_nothing(sms_client, control) -> None:
    set_faults(control, {"sms": {"error_5xx_rate": 1.0}})

    response = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    assert response.status_code == 503
    assert response.json()["resultCode"] == 1
    assert sms_messages(control) == []
    counters = sms_stats(control)
    assert counters["faults_injected"] == {"error_5xx": 1}
    assert counters["requests"] == 1
    assert counters["messages_accepted"] == 0


def test_retry_after_5xx_is_not_duplicate(sms_client, control) -> None:
    set_faults(control, {"sms": {"error_5xx_rate": 1.0, "error_5xx_status": 502}})
    failed = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))
    set_faults(control, {"sms": {}})

    retried = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    assert failed.status_code == 502
    assert retried.status_code == 202
    assert sms_stats(control)["duplicates_offered"] == 0
    assert len(sms_messages(control)) == 1


def test_429_retry_after_seconds(sms_client, control) -> None:
    set_faults(control, {"sms": {"rate_429": 1.0, "retry_after": 7}})

    response = sms_client.post("/sms/sendbatch", json={"messages": [sms_message("a")]})

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["resultCode"] == 3
    assert sms_messages(control) == []
    assert sms_stats(control)["faults_injected"] == {"rate_429": 1}


def test_429_retry_after_http_date(sms_client, control) -> None:
    set_faults(control, {"sms": {"rate_429": 1.0, "retry_after": 30, "retry_after_format": "http-date"}})
    before = time.time()

    response = sms_client.post("/sms/send", json=sms_message("a"))

    assert response.status_code == 429
    retry_at = parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert before + 30 <= retry_at <= time.time() + 31
    assert sms_messages(control) == []


def test_faults_replaced_per_channel(control) -> None:
    set_faults(control, {"sms": {"rate_429": 1.0}, "mailbox": {"latency_ms": 5}})

    current = set_faults(control, {"sms": {"error_5xx_rate": 0.5}})

    assert current["sms"]["rate_429"] == 0.0
    assert current["sms"]["error_5xx_rate"] == 0.5
    assert current["mailbox"]["latency_ms"] == 5


def test_faults_cover_every_channel(control) -> None:
    current = control.get("/_sim/faults").json()

    assert list(current) == ["sms", "mailbox", "push", "email", "einvoice", "paper"]
    assert current["push"]["receipt_early_rate"] == 0.0
    assert current["email"]["max_request_faults"] is None


def test_stats_and_messages_cover_every_channel(control) -> None:
    counters = control.get("/_sim/stats").json()

    assert list(counters) == ["sms", "mailbox", "push", "email", "einvoice", "paper"]
    for channel in counters:
        assert counters[channel]["accepted_per_second"] == {}
        assert control.get("/_sim/messages", params={"channel": channel}).json() == []


def test_max_request_faults_lets_retry_pass(sms_client, control) -> None:
    set_faults(control, {"sms": {"error_5xx_rate": 1.0, "max_request_faults": 2}})

    statuses = [sms_client.post("/sms/send", json=sms_message("inv-1-sms-1")).status_code for _ in range(4)]

    assert statuses == [503, 503, 202, 202]
    counters = sms_stats(control)
    assert counters["faults_injected"] == {"error_5xx": 2}
    assert counters["duplicates_offered"] == 1


def test_setting_faults_restarts_fault_count(sms_client, control) -> None:
    set_faults(control, {"sms": {"rate_429": 1.0, "max_request_faults": 1}})
    sms_client.post("/sms/send", json=sms_message("a"))

    set_faults(control, {"sms": {"rate_429": 1.0, "max_request_faults": 1}})

    assert sms_client.post("/sms/send", json=sms_message("a")).status_code == 429
    assert sms_client.post("/sms/send", json=sms_message("a")).status_code == 202


def test_reset_restores_configured_faults(control) -> None:
    set_faults(control, {"sms": {"rate_429": 1.0}})

    control.post("/_sim/reset")

    assert control.get("/_sim/faults").json()["sms"]["rate_429"] == 0.0


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"fax": {}}, 404, "unknown channel"),
        ({"sms": {"rate_429": 0.6, "error_5xx_rate": 0.6}}, 400, "at most 1"),
        ({"sms": {"retry_after_format": "minutes"}}, 400, "retry_after_format"),
        ({"sms": {"latency": 5}}, 400, "latency"),
        ({"email": {"receipt_early_rate": 1.5}}, 400, "receipt_early_rate"),
        ({"paper": {"max_request_faults": -1}}, 400, "max_request_faults"),
    ],
)
def test_invalid_fault_configuration_rejected(control, body, status, text) -> None:
    response = control.post("/_sim/faults", json=body)

    assert response.status_code == status
    assert text in response.text


def test_faults_reproducible_after_reset(sms_client, control) -> None:
    def statuses() -> list[int]:
        set_faults(control, {"sms": {"error_5xx_rate": 0.5}})
        return [sms_client.post("/sms/send", json=sms_message(f"ref-{n}")).status_code for n in range(20)]

    first = statuses()
    control.post("/_sim/reset")
    second = statuses()

    assert first == second
    assert set(first) == {202, 503}


def test_rejected_recipients_get_permanent_codes(sms_client, control) -> None:
    set_faults(control, {"sms": {"reject_recipients": ["+46700000001"], "block_recipients": ["+46700000002"]}})
    batch = [
        sms_message("a", destination="+46700000001"),
        sms_message("b", destination="+46700000002"),
        sms_message("c", destination="+46700000003"),
    ]

    replies = sms_client.post("/sms/sendbatch", json={"messages": batch}).json()["messages"]

    assert [reply["resultCode"] for reply in replies] == [2104, 2105, 1005]
    assert [record["idempotency_key"] for record in sms_messages(control)] == ["c"]
    counters = sms_stats(control)
    assert counters["rejected"] == 2
    assert counters["faults_injected"] == {"reject_recipient": 1, "block_recipient": 1}


def test_rejected_mailbox_recipient_not_found(mailbox_client, control) -> None:
    ssn = next(
        number
        for serial in range(100)
        if has_mailbox(number := make_personal_number(serial), simulator_config(None).mailbox)
    )
    set_faults(control, {"mailbox": {"reject_recipients": [ssn]}})

    response = mailbox_client.post(f"/v2/tenant/{TENANT}/content", json=invoice_content(ssn, make_ocr(1001)))

    assert response.status_code == 404
    assert response.json()["code"] == "recipient_not_found"
    assert control.get("/_sim/messages", params={"channel": "mailbox"}).json() == []


def test_timeout_before_accept_records_nothing(simulator, control) -> None:
    set_faults(control, {"sms": {"timeout_rate": 1.0, "timeout_hold_s": 1.0}})
    with httpx.Client(base_url=simulator.url, auth=SMS_AUTH, trust_env=False) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/sms/send", json=sms_message("inv-1-sms-1"), timeout=0.3)
        set_faults(control, {"sms": {}})

        retried = client.post("/sms/send", json=sms_message("inv-1-sms-1"), timeout=5)

    assert retried.status_code == 202
    counters = sms_stats(control)
    assert counters["faults_injected"] == {"timeout": 1}
    assert counters["duplicates_offered"] == 0
    assert len(sms_messages(control)) == 1


def test_timeout_after_accept_records_message(simulator, control) -> None:
    set_faults(control, {"sms": {"timeout_rate": 1.0, "timeout_hold_s": 1.0, "timeout_after_accept": True}})
    with httpx.Client(base_url=simulator.url, auth=SMS_AUTH, trust_env=False) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/sms/send", json=sms_message("inv-1-sms-1"), timeout=0.3)
        set_faults(control, {"sms": {}})

        found = client.get("/sms/messages/by-ref/inv-1-sms-1", timeout=5)
        retried = client.post("/sms/send", json=sms_message("inv-1-sms-1"), timeout=5)

    assert found.status_code == 200
    assert retried.json()["messageId"] == found.json()["messageId"]
    assert sms_stats(control)["duplicates_offered"] == 1
    assert len(sms_messages(control)) == 1


def test_send_scope_spares_lookups(sms_client, control) -> None:
    set_faults(control, {"sms": {"error_5xx_rate": 1.0}})

    lookup = sms_client.get("/sms/messages/by-ref/none")

    assert lookup.status_code == 404


def test_all_scope_faults_lookups(sms_client, control) -> None:
    set_faults(control, {"sms": {"error_5xx_rate": 1.0, "scope": "all"}})

    lookup = sms_client.get("/sms/messages/by-ref/none")

    assert lookup.status_code == 503


def test_latency_delays_reply(sms_client, control) -> None:
    set_faults(control, {"sms": {"latency_ms": 300}})
    started = time.monotonic()

    response = sms_client.post("/sms/send", json=sms_message("a"))

    assert response.status_code == 202
    assert time.monotonic() - started >= 0.3
    assert sms_stats(control)["faults_injected"] == {"latency": 1}


def test_mailbox_5xx_records_nothing(mailbox_client, control) -> None:
    set_faults(control, {"mailbox": {"error_5xx_rate": 1.0}})
    ssn = make_personal_number(1)

    response = mailbox_client.post(f"/v2/tenant/{TENANT}/content", json=invoice_content(ssn, make_ocr(1001)))

    assert response.status_code == 503
    assert response.json()["code"] == "error_5xx"
    assert control.get("/_sim/messages", params={"channel": "mailbox"}).json() == []
