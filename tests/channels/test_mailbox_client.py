"""MailboxClient against the simulator's Kivra-style mailbox gateway over real HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
from channel_test_support import MAILBOX_CLIENT, TENANT, mailbox_content, personal_number, poll_until

from invoice_delivery.channels import GatewayConfig
from invoice_delivery.channels.mailbox import MailboxClient, MailboxMessage
from invoice_delivery.simulator import SimulatorProcess


def mailbox_client(sim: SimulatorProcess, **overrides) -> MailboxClient:
    settings = {
        "login": MAILBOX_CLIENT[0],
        "password": MAILBOX_CLIENT[1],
        "extra": {"tenant_key": TENANT},
        "max_attempts": 3,
    }
    return MailboxClient(GatewayConfig(base_url=sim.url, **{**settings, **overrides}))


def message(delivery_id: int = 1) -> MailboxMessage:
    return MailboxMessage(delivery_id, f"inv-{delivery_id}-mailbox-1", mailbox_content(delivery_id))


def test_send_accepted_with_content_key(sim, control) -> None:
    [outcome] = asyncio.run(mailbox_client(sim).send([message()]))

    assert outcome.accepted is True
    [record] = control.get("/_sim/messages", params={"channel": "mailbox"}).json()
    assert record["message_id"] == outcome.message_id
    assert record["idempotency_key"] == "inv-1-mailbox-1"


def test_duplicate_key_returns_same_key(sim, channel_stats) -> None:
    client = mailbox_client(sim)

    [first] = asyncio.run(client.send([message()]))
    [again] = asyncio.run(client.send([message()]))

    assert again.message_id == first.message_id
    assert channel_stats("mailbox")["duplicates_offered"] == 1


def test_rejection_carries_reason(sim, set_faults) -> None:
    set_faults("mailbox", {"reject_recipients": [personal_number(1)]})

    [outcome] = asyncio.run(mailbox_client(sim).send([message()]))

    assert outcome.accepted is False
    assert "404" in outcome.reason
    assert "recipient_not_found" in outcome.reason


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_429_retried_after_retry_after(sim, set_faults, channel_stats, retry_after_format) -> None:
    set_faults(
        "mailbox",
        {"rate_429": 1.0, "retry_after": 1, "retry_after_format": retry_after_format, "max_request_faults": 1},
    )
    started = time.monotonic()

    [outcome] = asyncio.run(mailbox_client(sim).send([message()]))

    assert outcome.accepted is True
    assert time.monotonic() - started >= 0.95
    assert channel_stats("mailbox")["faults_injected"] == {"rate_429": 1}


def test_5xx_retried_then_accepted(sim, set_faults) -> None:
    set_faults("mailbox", {"error_5xx_rate": 1.0, "max_request_faults": 1})

    [outcome] = asyncio.run(mailbox_client(sim).send([message()]))

    assert outcome.accepted is True


def test_persistent_5xx_unresolved(sim, set_faults) -> None:
    set_faults("mailbox", {"error_5xx_rate": 1.0})

    [outcome] = asyncio.run(mailbox_client(sim, max_attempts=2).send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)


def test_lookup_found_and_not_found(sim) -> None:
    client = mailbox_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    found = asyncio.run(client.lookup(["inv-1-mailbox-1", "inv-2-mailbox-1"]))

    assert found == {"inv-1-mailbox-1": sent.message_id, "inv-2-mailbox-1": None}


def test_status_pending_then_delivered_digitally(sim) -> None:
    client = mailbox_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    first = asyncio.run(client.status([sent.message_id]))
    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    assert first == {sent.message_id: ("pending", None)}
    assert final == {sent.message_id: ("delivered", "digital")}


def test_status_failed_has_reason(failing_simulator) -> None:
    client = mailbox_client(failing_simulator)
    [sent] = asyncio.run(client.send([message()]))

    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    state, detail = final[sent.message_id]
    assert state == "failed"
    assert detail


def test_status_unknown_key_pending(sim) -> None:
    result = asyncio.run(mailbox_client(sim).status(["no-such-key"]))

    assert result == {"no-such-key": ("pending", "content key unknown to the mailbox gateway")}


def test_status_failed_query_pending(sim, set_faults) -> None:
    client = mailbox_client(sim, max_attempts=1)
    [sent] = asyncio.run(client.send([message()]))
    set_faults("mailbox", {"error_5xx_rate": 1.0, "scope": "all"})

    result = asyncio.run(client.status([sent.message_id]))

    state, detail = result[sent.message_id]
    assert state == "pending"
    assert detail.startswith("status query failed")
