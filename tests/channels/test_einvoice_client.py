"""EinvoiceClient against the simulator's Peppol access point over real HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
from channel_test_support import BUYER_ID, EINVOICE_AUTH, SELLER_ID, UNKNOWN_RECEIVER, poll_until, ubl_invoice

from invoice_delivery.channels import GatewayConfig, GatewayError
from invoice_delivery.channels.einvoice import EinvoiceClient, EinvoiceMessage
from invoice_delivery.simulator import SimulatorProcess


def einvoice_client(sim: SimulatorProcess, **overrides) -> EinvoiceClient:
    settings = {"login": EINVOICE_AUTH[0], "password": EINVOICE_AUTH[1], "max_attempts": 3, **overrides}
    return EinvoiceClient(GatewayConfig(base_url=sim.url, **settings))


def message(delivery_id: int = 1, receiver: str = BUYER_ID, xml: bytes | None = None) -> EinvoiceMessage:
    return EinvoiceMessage(delivery_id, f"inv-{delivery_id}-einvoice-1", SELLER_ID, receiver, xml or ubl_invoice())


def test_send_accepted_with_transmission_id(sim, control) -> None:
    [outcome] = asyncio.run(einvoice_client(sim).send([message()]))

    assert outcome.accepted is True
    [record] = control.get("/_sim/messages", params={"channel": "einvoice"}).json()
    assert record["message_id"] == outcome.message_id
    assert record["recipient"] == BUYER_ID
    assert record["body"]["sender"] == SELLER_ID
    assert record["body"]["document_id"] == "NK-2025-000001"


def test_duplicate_key_returns_same_id(sim, channel_stats) -> None:
    client = einvoice_client(sim)

    [first] = asyncio.run(client.send([message()]))
    [again] = asyncio.run(client.send([message()]))

    assert again.message_id == first.message_id
    assert channel_stats("einvoice")["duplicates_offered"] == 1


@pytest.mark.parametrize(
    ("receiver", "xml", "text"),
    [
        (UNKNOWN_RECEIVER, None, "receiver_not_registered"),
        ("0007:5591837406", None, "check digit"),
        (BUYER_ID, b"<Invoice>", "not well-formed"),
    ],
)
def test_rejection_carries_reason(sim, receiver, xml, text) -> None:
    [outcome] = asyncio.run(einvoice_client(sim).send([message(receiver=receiver, xml=xml)]))

    assert outcome.accepted is False
    assert outcome.message_id is None
    assert text in outcome.reason


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_429_retried_after_retry_after(sim, set_faults, channel_stats, retry_after_format) -> None:
    set_faults(
        "einvoice",
        {"rate_429": 1.0, "retry_after": 1, "retry_after_format": retry_after_format, "max_request_faults": 1},
    )
    started = time.monotonic()

    [outcome] = asyncio.run(einvoice_client(sim).send([message()]))

    assert outcome.accepted is True
    assert time.monotonic() - started >= 0.95
    assert channel_stats("einvoice")["faults_injected"] == {"rate_429": 1}


def test_5xx_retried_then_accepted(sim, set_faults) -> None:
    set_faults("einvoice", {"error_5xx_rate": 1.0, "error_5xx_status": 502, "max_request_faults": 1})

    [outcome] = asyncio.run(einvoice_client(sim).send([message()]))

    assert outcome.accepted is True


def test_persistent_5xx_unresolved(sim, set_faults) -> None:
    set_faults("einvoice", {"error_5xx_rate": 1.0})

    [outcome] = asyncio.run(einvoice_client(sim, max_attempts=2).send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)


def test_wrong_password_raises_gateway_error(sim) -> None:
    with pytest.raises(GatewayError, match="credentials"):
        asyncio.run(einvoice_client(sim, password="wrong").send([message()]))


def test_lookup_found_and_not_found(sim) -> None:
    client = einvoice_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    found = asyncio.run(client.lookup(["inv-1-einvoice-1", "inv-2-einvoice-1"]))

    assert found == {"inv-1-einvoice-1": sent.message_id, "inv-2-einvoice-1": None}


def test_status_pending_then_delivered(sim) -> None:
    client = einvoice_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    first = asyncio.run(client.status([sent.message_id]))
    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    assert first == {sent.message_id: ("pending", None)}
    assert final == {sent.message_id: ("delivered", None)}


def test_status_rejected_lists_reasons(failing_simulator) -> None:
    client = einvoice_client(failing_simulator)
    [sent] = asyncio.run(client.send([message()]))

    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    state, detail = final[sent.message_id]
    assert state == "failed"
    assert detail.startswith("rejected by the receiver (RE): BR-CO-15")


def test_status_unknown_id_pending(sim) -> None:
    result = asyncio.run(einvoice_client(sim).status(["no-such-transmission"]))

    assert result == {"no-such-transmission": ("pending", "transmission id unknown to the access point")}


def test_status_failed_query_pending(sim, set_faults) -> None:
    client = einvoice_client(sim, max_attempts=1)
    [sent] = asyncio.run(client.send([message()]))
    set_faults("einvoice", {"error_5xx_rate": 1.0, "scope": "all"})

    result = asyncio.run(client.status([sent.message_id]))

    state, detail = result[sent.message_id]
    assert state == "pending"
    assert detail.startswith("status query failed")


def test_status_wrong_password_raises(sim) -> None:
    with pytest.raises(GatewayError, match="e-invoice status: the access point rejected the credentials"):
        asyncio.run(einvoice_client(sim, password="wrong").status(["any-transmission"]))
