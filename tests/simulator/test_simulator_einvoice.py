"""Peppol access point contract of the simulator, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from simulator_support import (
    BUYER_IDS,
    EINVOICE_AUTH,
    EINVOICE_DECISION_DELAY_S,
    EINVOICE_SECRET,
    RECEIPT_DELAY_S,
    SELLER_ID,
    UNKNOWN_RECEIVER,
    einvoice_headers,
    free_port,
    simulator_config,
    ubl_invoice,
)

from invoice_delivery import webhooks
from invoice_delivery.simulator import SimulatorProcess


def stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["einvoice"]


def messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "einvoice"}).json()


def submit(client: httpx.Client, key: str | None = "inv-1-einvoice-1", xml: bytes | None = None, **headers: str):
    return client.post("/documents", content=xml or ubl_invoice(), headers=einvoice_headers(key, **headers))


def wait_for_status(client: httpx.Client, transmission_id: str, wanted: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get(f"/documents/{transmission_id}/status").json()
        if status["status"] == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_document_acknowledged_then_accepted(einvoice_client, control) -> None:
    response = submit(einvoice_client)

    assert response.status_code == 202
    transmission_id = response.json()["transmission_id"]
    acknowledged = einvoice_client.get(f"/documents/{transmission_id}/status").json()
    assert acknowledged == {
        "transmission_id": transmission_id,
        "status": "AB",
        "reasons": [],
        "updated_at": acknowledged["updated_at"],
    }
    accepted = wait_for_status(einvoice_client, transmission_id, "AP")
    assert accepted["status"] == "AP"
    assert accepted["updated_at"] > acknowledged["updated_at"]
    [record] = messages(control)
    assert record["message_id"] == transmission_id
    assert record["recipient"] == BUYER_IDS["0007"]
    assert record["body"]["document_type"] == "Invoice"
    assert record["body"]["document_id"] == "NK-2025-000001"
    assert record["body"]["sender"] == SELLER_ID
    counters = stats(control)
    assert counters["messages_accepted"] == 1
    assert sum(counters["accepted_per_second"].values()) == 1


def test_credit_note_accepted(einvoice_client, control) -> None:
    response = submit(einvoice_client, xml=ubl_invoice("KN-1", root="CreditNote"))

    assert response.status_code == 202
    assert messages(control)[0]["body"]["document_type"] == "CreditNote"


@pytest.mark.parametrize("scheme", sorted(BUYER_IDS))
def test_every_scheme_accepted(einvoice_client, scheme) -> None:
    response = submit(einvoice_client, key=f"key-{scheme}", receiver=BUYER_IDS[scheme])

    assert response.status_code == 202


def test_duplicate_key_returns_first_id(einvoice_client, control) -> None:
    first = submit(einvoice_client)

    again = submit(einvoice_client, xml=ubl_invoice("NK-2025-000002"))

    assert again.status_code == 202
    assert again.json()["transmission_id"] == first.json()["transmission_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(messages(control)) == 1
    assert stats(control)["duplicates_offered"] == 1


@pytest.mark.parametrize(
    ("header", "value", "text"),
    [
        ("X-Peppol-Receiver", "", "missing"),
        ("X-Peppol-Receiver", "5591837405", "supported scheme"),
        ("X-Peppol-Receiver", "0002:FR23342", "supported scheme"),
        ("X-Peppol-Receiver", "0007:559183740", "10 digits"),
        ("X-Peppol-Receiver", "0007:5591837406", "check digit"),
        ("X-Peppol-Receiver", "0192:123456784", "check digit"),
        ("X-Peppol-Receiver", "0088:9482348239847239874", "13 digits"),
        ("X-Peppol-Receiver", "0184:12345678", "check digit"),
        ("X-Peppol-Receiver", "0037:2077474-1", "check digit"),
        ("X-Peppol-Sender", "0007:55918374O5", "10 digits"),
    ],
)
def test_invalid_participant_id_400(einvoice_client, control, header, value, text) -> None:
    response = submit(einvoice_client, **{header: value})

    assert response.status_code == 400
    error = response.json()
    assert error["field"] == header
    assert text in error["message"]
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


@pytest.mark.parametrize(
    ("xml", "text"),
    [
        (b"<Invoice", "not well-formed"),
        (b"", "not well-formed"),
        (b"<Invoice xmlns='urn:example:other'/>", "not a UBL 2.1 document"),
        (b"<Order xmlns='urn:oasis:names:specification:ubl:schema:xsd:Order-2'/>", "not a UBL 2.1 document"),
        (
            b"<!DOCTYPE Invoice [<!ENTITY x 'y'>]>"
            b"<Invoice xmlns='urn:oasis:names:specification:ubl:schema:xsd:Invoice-2'>&x;</Invoice>",
            "DOCTYPE",
        ),
    ],
)
def test_invalid_document_400(einvoice_client, control, xml, text) -> None:
    response = einvoice_client.post("/documents", content=xml, headers=einvoice_headers("k"))

    assert response.status_code == 400
    assert response.json()["field"] == "body"
    assert text in response.json()["message"]
    assert messages(control) == []


def test_wrong_content_type_415(einvoice_client) -> None:
    response = submit(einvoice_client, **{"Content-Type": "application/json"})

    assert response.status_code == 415
    assert "application/xml" in response.json()["message"]


@pytest.mark.parametrize("fault", [False, True])
def test_unregistered_receiver_404(einvoice_client, control, fault) -> None:
    receiver = BUYER_IDS["0192"] if fault else UNKNOWN_RECEIVER
    if fault:
        control.post("/_sim/faults", json={"einvoice": {"reject_recipients": [receiver]}})

    response = submit(einvoice_client, receiver=receiver)

    assert response.status_code == 404
    assert response.json()["code"] == "receiver_not_registered"
    assert receiver in response.json()["message"]
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


@pytest.mark.parametrize("auth", [None, (EINVOICE_AUTH[0], "wrong")])
def test_routes_require_basic_auth(simulator, control, auth) -> None:
    with httpx.Client(base_url=simulator.url, auth=auth, trust_env=False) as client:
        response = submit(client)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert messages(control) == []


def test_lookup_by_idempotency_key(einvoice_client) -> None:
    sent = submit(einvoice_client).json()

    response = einvoice_client.get("/documents/by-idempotency-key/inv-1-einvoice-1")

    assert response.status_code == 200
    record = response.json()
    assert record["transmission_id"] == sent["transmission_id"]
    assert record["idempotency_key"] == "inv-1-einvoice-1"
    assert record["status"] == "AB"
    assert record["document_type"] == "Invoice"
    assert record["receiver"] == BUYER_IDS["0007"]


def test_lookup_and_status_unknown_404(einvoice_client) -> None:
    lookup = einvoice_client.get("/documents/by-idempotency-key/never-sent")
    status = einvoice_client.get("/documents/no-such-id/status")

    assert lookup.status_code == 404
    assert status.status_code == 404
    assert status.json()["code"] == "document_not_found"


def test_status_receipts_ab_then_ap(einvoice_client, receiver) -> None:
    started = time.monotonic()
    sent = submit(einvoice_client).json()

    first, second = receiver.wait_for(2, path="/receipts/einvoice")

    for receipt in (first, second):
        webhooks.verify(EINVOICE_SECRET, receipt.headers, receipt.body)
    acknowledged, accepted = json.loads(first.body), json.loads(second.body)
    assert acknowledged["status"] == "AB"
    assert accepted["status"] == "AP"
    assert acknowledged["transmission_id"] == accepted["transmission_id"] == sent["transmission_id"]
    assert accepted["document_id"] == "NK-2025-000001"
    assert accepted["receiver"] == BUYER_IDS["0007"]
    assert accepted["reasons"] == []
    assert first.arrived_at - started >= RECEIPT_DELAY_S
    assert second.arrived_at - started >= EINVOICE_DECISION_DELAY_S + RECEIPT_DELAY_S


def wait_for_outbox(client: httpx.Client, count: int, timeout_s: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = client.get("/_sim/receipts", params={"channel": "einvoice", "status": "outbox"}).json()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module")
def rejecting_simulator() -> Iterator[SimulatorProcess]:
    """A simulator whose access point rejects every document and skips check digits."""
    base = simulator_config(None)
    einvoice = base.einvoice.model_copy(update={"rejection_rate": 1.0, "check_participant_checksums": False})
    with SimulatorProcess(free_port(), base.model_copy(update={"einvoice": einvoice})) as process:
        yield process


def test_rejected_status_lists_reasons(rejecting_simulator) -> None:
    with httpx.Client(base_url=rejecting_simulator.url, auth=EINVOICE_AUTH, trust_env=False, timeout=10) as client:
        sent = submit(client, receiver="0184:12345678").json()
        status = wait_for_status(client, sent["transmission_id"], "RE")
        outbox = wait_for_outbox(client, 2)

    assert status["status"] == "RE"
    assert status["reasons"][0].startswith("BR-CO-15")
    assert [item["payload"]["status"] for item in outbox] == ["AB", "RE"]
    assert outbox[1]["payload"]["reasons"] == status["reasons"]
