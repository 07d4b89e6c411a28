"""PushClient against the simulator's FCM-style push gateway over real HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
from channel_test_support import PUSH_PROJECT, PUSH_TOKEN, push_payload

from invoice_delivery.channels import GatewayConfig, GatewayError
from invoice_delivery.channels.push import UNREGISTERED_REASON, PushClient, PushMessage
from invoice_delivery.simulator import SimulatorProcess


def push_client(sim: SimulatorProcess, **overrides) -> PushClient:
    settings = {"password": PUSH_TOKEN, "extra": {"project": PUSH_PROJECT}, "max_attempts": 3, **overrides}
    return PushClient(GatewayConfig(base_url=sim.url, **settings))


def message(delivery_id: int = 1, token: str = "installation-1", key: str | None = None) -> PushMessage:
    return PushMessage(delivery_id, key or f"inv-{delivery_id}-push-1", token, push_payload())


def test_send_accepted_with_name(sim, control) -> None:
    [outcome] = asyncio.run(push_client(sim).send([message()]))

    assert outcome.accepted is True
    assert outcome.delivery_id == 1
    assert outcome.message_id.startswith(f"projects/{PUSH_PROJECT}/messages/")
    [record] = control.get("/_sim/messages", params={"channel": "push"}).json()
    assert record["message_id"] == outcome.message_id
    assert record["body"]["notification"]["title"] == "Ny faktura"
    assert record["body"]["data"] == {"invoice": "NK-2025-000001"}


def test_send_keeps_order_of_many(sim) -> None:
    messages = [message(number) for number in range(30)]

    outcomes = asyncio.run(push_client(sim, concurrency=4).send(messages))

    assert [outcome.delivery_id for outcome in outcomes] == list(range(30))
    assert all(outcome.accepted for outcome in outcomes)
    assert len({outcome.message_id for outcome in outcomes}) == 30


def test_duplicate_key_returns_same_name(sim, channel_stats) -> None:
    client = push_client(sim)

    [first] = asyncio.run(client.send([message()]))
    [again] = asyncio.run(client.send([message()]))

    assert again.accepted is True
    assert again.message_id == first.message_id
    assert channel_stats("push")["duplicates_offered"] == 1


def test_dead_token_rejected_unregistered(sim) -> None:
    [outcome] = asyncio.run(push_client(sim).send([message(token="dead-installation")]))

    assert outcome.accepted is False
    assert outcome.reason == UNREGISTERED_REASON


def test_invalid_payload_raises_before_sending(sim, control) -> None:
    broken = PushMessage(7, "inv-7-push-1", "installation-1", b'{"title": "only a title"}')

    with pytest.raises(ValueError, match="delivery 7"):
        asyncio.run(push_client(sim).send([message(), broken]))

    assert control.get("/_sim/messages", params={"channel": "push"}).json() == []


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_429_retried_after_retry_after(sim, set_faults, channel_stats, retry_after_format) -> None:
    set_faults(
        "push", {"rate_429": 1.0, "retry_after": 1, "retry_after_format": retry_after_format, "max_request_faults": 1}
    )
    started = time.monotonic()

    [outcome] = asyncio.run(push_client(sim).send([message()]))

    assert outcome.accepted is True
    assert time.monotonic() - started >= 0.95
    assert channel_stats("push")["faults_injected"] == {"rate_429": 1}


def test_5xx_retried_then_accepted(sim, set_faults, channel_stats) -> None:
    set_faults("push", {"error_5xx_rate": 1.0, "max_request_faults": 2})

    [outcome] = asyncio.run(push_client(sim).send([message()]))

    assert outcome.accepted is True
    assert channel_stats("push")["faults_injected"] == {"error_5xx": 2}


def test_persistent_5xx_unresolved(sim, set_faults, channel_stats, caplog) -> None:
    set_faults("push", {"error_5xx_rate": 1.0})

    [outcome] = asyncio.run(push_client(sim, max_attempts=2).send([message()]))

    assert outcome.accepted is False
    assert outcome.message_id is None
    assert outcome.reason is None
    assert channel_stats("push")["requests"] == 2
    assert "1 of 1 push sends unresolved" in caplog.text


def test_wrong_token_raises_gateway_error(sim) -> None:
    with pytest.raises(GatewayError, match="401"):
        asyncio.run(push_client(sim, password="wrong").send([message()]))


def test_lookup_found_and_not_found(sim) -> None:
    client = push_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    found = asyncio.run(client.lookup(["inv-1-push-1", "inv-2-push-1"]))

    assert found == {"inv-1-push-1": sent.message_id, "inv-2-push-1": None}


def test_lookup_after_timeout_finds_message(sim, set_faults) -> None:
    set_faults("push", {"timeout_rate": 1.0, "timeout_hold_s": 1.0, "timeout_after_accept": True})
    client = push_client(sim, timeout_s=0.3, max_attempts=1)

    [outcome] = asyncio.run(client.send([message()]))
    found = asyncio.run(client.lookup(["inv-1-push-1"]))

    assert outcome.accepted is False
    assert outcome.reason is None
    assert found["inv-1-push-1"] is not None


def test_reply_lost_not_resent_in_place(sim, set_faults, channel_stats) -> None:
    set_faults("push", {"timeout_rate": 1.0, "timeout_hold_s": 1.0, "timeout_after_accept": True})
    client = push_client(sim, timeout_s=0.3, max_attempts=3)

    [outcome] = asyncio.run(client.send([message()]))

    assert outcome.accepted is False
    assert outcome.reason is None
    assert channel_stats("push")["duplicates_offered"] == 0


def test_connect_refused_unresolved() -> None:
    client = PushClient(GatewayConfig(base_url="http://127.0.0.1:9", password="token", max_attempts=2,
                                      extra={"project": PUSH_PROJECT}))

    [outcome] = asyncio.run(client.send([message()]))

    assert outcome.accepted is False
    assert outcome.reason is None


def test_missing_project_rejected() -> None:
    with pytest.raises(ValueError, match="project"):
        PushClient(GatewayConfig(base_url="http://127.0.0.1:1", password="token"))
