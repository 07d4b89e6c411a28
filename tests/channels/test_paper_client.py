"""PaperClient against the simulator's print partner over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from channel_test_support import PAPER_AUTH, PDF_BYTES, RETURNED_POSTAL_CODE, poll_until, postal_address

from invoice_delivery.channels import GatewayConfig, GatewayError
from invoice_delivery.channels.paper import PaperClient, PaperMessage, job_body
from invoice_delivery.simulator import SimulatorProcess

OPTIONS = {"duplex": True, "colour": False, "postage": "A"}


def paper_client(sim: SimulatorProcess, **overrides) -> PaperClient:
    settings = {"login": PAPER_AUTH[0], "password": PAPER_AUTH[1], "max_attempts": 3, **overrides}
    return PaperClient(GatewayConfig(base_url=sim.url, **settings))


def message(delivery_id: int = 1, address: dict | None = None, pdf: bytes = PDF_BYTES) -> PaperMessage:
    return PaperMessage(delivery_id, f"inv-{delivery_id}-paper-1", address or postal_address(), pdf, OPTIONS)


def test_job_body_encodes_pdf() -> None:
    body = job_body(message(5))

    assert body["documents"] == [
        {"name": "invoice-5.pdf", "content_type": "application/pdf", "data": base64.b64encode(PDF_BYTES).decode()}
    ]
    assert body["options"] == OPTIONS


def test_send_accepted_with_job_id(sim, control) -> None:
    [outcome] = asyncio.run(paper_client(sim).send([message()]))

    assert outcome.accepted is True
    [record] = control.get("/_sim/messages", params={"channel": "paper"}).json()
    assert record["message_id"] == outcome.message_id
    assert record["body"]["options"] == OPTIONS
    assert record["body"]["pdf_bytes"] == len(PDF_BYTES)


def test_duplicate_key_returns_same_id(sim, channel_stats) -> None:
    client = paper_client(sim)

    [first] = asyncio.run(client.send([message()]))
    [again] = asyncio.run(client.send([message()]))

    assert again.message_id == first.message_id
    assert channel_stats("paper")["duplicates_offered"] == 1


@pytest.mark.parametrize(
    ("address", "pdf", "text"),
    [
        (postal_address(city=""), PDF_BYTES, "address.city"),
        (postal_address(postal_code="9032"), PDF_BYTES, "address.postal_code"),
        (postal_address(), b"plain text", "documents[0].data"),
    ],
)
def test_rejection_carries_reason(sim, address, pdf, text) -> None:
    [outcome] = asyncio.run(paper_client(sim).send([message(address=address, pdf=pdf)]))

    assert outcome.accepted is False
    assert outcome.reason.startswith("print partner rejected the job (400 invalid_field)")
    assert text in outcome.reason


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_429_retried_after_retry_after(sim, set_faults, channel_stats, retry_after_format) -> None:
    set_faults(
        "paper", {"rate_429": 1.0, "retry_after": 1, "retry_after_format": retry_after_format, "max_request_faults": 1}
    )
    started = time.monotonic()

    [outcome] = asyncio.run(paper_client(sim).send([message()]))

    assert outcome.accepted is True
    assert time.monotonic() - started >= 0.95
    assert channel_stats("paper")["faults_injected"] == {"rate_429": 1}


def test_5xx_retried_then_accepted(sim, set_faults) -> None:
    set_faults("paper", {"error_5xx_rate": 1.0, "max_request_faults": 1})

    [outcome] = asyncio.run(paper_client(sim).send([message()]))

    assert outcome.accepted is True


def test_persistent_5xx_unresolved(sim, set_faults) -> None:
    set_faults("paper", {"error_5xx_rate": 1.0})

    [outcome] = asyncio.run(paper_client(sim, max_attempts=2).send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)


def test_wrong_password_raises_gateway_error(sim) -> None:
    with pytest.raises(GatewayError, match="credentials"):
        asyncio.run(paper_client(sim, password="wrong").send([message()]))


def test_lookup_found_and_not_found(sim) -> None:
    client = paper_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    found = asyncio.run(client.lookup(["inv-1-paper-1", "inv-2-paper-1"]))

    assert found == {"inv-1-paper-1": sent.message_id, "inv-2-paper-1": None}


def test_status_pending_then_delivered(sim) -> None:
    client = paper_client(sim)
    [sent] = asyncio.run(client.send([message()]))

    first = asyncio.run(client.status([sent.message_id]))
    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    assert first == {sent.message_id: ("pending", None)}
    assert final == {sent.message_id: ("delivered", None)}


def test_status_returned_is_failed(sim) -> None:
    client = paper_client(sim)
    [sent] = asyncio.run(client.send([message(address=postal_address(postal_code=RETURNED_POSTAL_CODE))]))

    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    state, detail = final[sent.message_id]
    assert state == "failed"
    assert "returned to sender" in detail


def test_status_return_rate_is_failed(failing_simulator) -> None:
    client = paper_client(failing_simulator)
    [sent] = asyncio.run(client.send([message()]))

    final = poll_until(lambda: client.status([sent.message_id]), lambda result: result[sent.message_id][0] != "pending")

    assert final[sent.message_id][0] == "failed"


def test_status_unknown_id_pending(sim) -> None:
    result = asyncio.run(paper_client(sim).status(["no-such-job"]))

    assert result == {"no-such-job": ("pending", "job id unknown to the print partner")}


def test_status_failed_query_pending(sim, set_faults) -> None:
    client = paper_client(sim, max_attempts=1)
    [sent] = asyncio.run(client.send([message()]))
    set_faults("paper", {"error_5xx_rate": 1.0, "scope": "all"})

    result = asyncio.run(client.status([sent.message_id, "no-such-job"]))

    state, detail = result[sent.message_id]
    assert state == "pending"
    assert detail.startswith("status query failed")
    assert result["no-such-job"][0] == "pending"


def test_lookup_wrong_password_raises(sim) -> None:
    with pytest.raises(GatewayError, match="print job lookup: the print partner rejected the credentials"):
        asyncio.run(paper_client(sim, password="wrong").lookup(["inv-1-paper-1"]))
