"""SmsClient against the simulator's LINK-style SMS gateway over real HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
from channel_test_support import SMS_AUTH

from invoice_delivery.channels import GatewayConfig
from invoice_delivery.channels.sms import SmsClient, SmsMessage
from invoice_delivery.simulator import SimulatorProcess

TEXT = "Din faktura på 1 234,50 kr förfaller 2025-01-31. OCR 12345682."


def sms_client(sim: SimulatorProcess, **overrides) -> SmsClient:
    settings = {"login": SMS_AUTH[0], "password": SMS_AUTH[1], "extra": {"source": "Invoices"}, "max_attempts": 3}
    return SmsClient(GatewayConfig(base_url=sim.url, **{**settings, **overrides}))


def message(delivery_id: int = 1, destination: str = "+46701234567") -> SmsMessage:
    return SmsMessage(delivery_id, f"inv-{delivery_id}-sms-1", destination, TEXT, "GSM")


def test_send_accepted_with_message_id(sim, control) -> None:
    [outcome] = asyncio.run(sms_client(sim).send([message()]))

    assert outcome.accepted is True
    [record] = control.get("/_sim/messages", params={"channel": "sms"}).json()
    assert record["message_id"] == outcome.message_id
    assert record["idempotency_key"] == "inv-1-sms-1"
    assert record["body"]["source"] == "Invoices"


def test_duplicate_key_returns_same_id(sim, channel_stats) -> None:
    client = sms_client(sim)

    [first] = asyncio.run(client.send([message()]))
    [again] = asyncio.run(client.send([message()]))

    assert again.message_id == first.message_id
    assert channel_stats("sms")["duplicates_offered"] == 1


def test_rejection_carries_result_code(sim, set_faults) -> None:
    set_faults("sms", {"reject_recipients": ["+46700000001"]})

    outcomes = asyncio.run(sms_client(sim).send([message(1, "+46700000001"), message(2, "0701234567")]))

    assert [outcome.accepted for outcome in outcomes] == [False, False]
    assert outcomes[0].reason == "SMS gateway result 2104: Unknown subscriber"
    assert outcomes[1].reason.startswith("SMS gateway result 2:")
    assert "destination" in outcomes[1].reason


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_429_retried_after_retry_after(sim, set_faults, channel_stats, retry_after_format) -> None:
    set_faults(
        "sms", {"rate_429": 1.0, "retry_after": 1, "retry_after_format": retry_after_format, "max_request_faults": 1}
    )
    started = time.monotonic()

    [outcome] = asyncio.run(sms_client(sim).send([message()]))

    assert outcome.accepted is True
    assert time.monotonic() - started >= 0.95
    assert channel_stats("sms")["faults_injected"] == {"rate_429": 1}


def test_5xx_retried_then_accepted(sim, set_faults) -> None:
    set_faults("sms", {"error_5xx_rate": 1.0, "max_request_faults": 1})

    [outcome] = asyncio.run(sms_client(sim).send([message()]))

    assert outcome.accepted is True


def test_persistent_5xx_unresolved(sim, set_faults) -> None:
    set_faults("sms", {"error_5xx_rate": 1.0})

    outcomes = asyncio.run(sms_client(sim, max_attempts=2).send([message(1), message(2)]))

    assert [(outcome.accepted, outcome.message_id, outcome.reason) for outcome in outcomes] == [(False, None, None)] * 2


def test_lookup_found_and_not_found(sim) -> None:
    client = sms_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    found = asyncio.run(client.lookup(["inv-1-sms-1", "inv-2-sms-1"]))

    assert found == {"inv-1-sms-1": sent.message_id, "inv-2-sms-1": None}
