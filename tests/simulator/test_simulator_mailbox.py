"""Digital mailbox contract of the simulator, over real HTTP."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from simulator_support import (
    MAILBOX_CLIENT,
    TENANT,
    invoice_content,
    make_ocr,
    make_personal_number,
    simulator_config,
)

from invoice_delivery.simulator.mailbox import has_mailbox

MAILBOX_CONFIG = simulator_config(None).mailbox
CONTENT_URL = f"/v2/tenant/{TENANT}/content"
USERMATCH_URL = f"/v2/tenant/{TENANT}/usermatch/ssn"


def numbers_with_mailbox(count: int, wanted: bool = True) -> list[str]:
    """Return valid personal numbers that have (or lack) a mailbox under the test configuration."""
    found = []
    serial = 0
    while len(found) < count:
        number = make_personal_number(serial)
        if has_mailbox(number, MAILBOX_CONFIG) is wanted:
            found.append(number)
        serial += 1
    return found


def stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["mailbox"]


def messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "mailbox"}).json()


def wait_for_status(client: httpx.Client, key: str, wanted: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get(f"{CONTENT_URL}/{key}/status").json()
        if status["status"] == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_token_issued_for_client_credentials(simulator) -> None:
    response = httpx.post(
        f"{simulator.url}/v2/auth/token",
        data={"grant_type": "client_credentials"},
        auth=MAILBOX_CLIENT,
        trust_env=False,
    )

    assert response.status_code == 200
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert len(token["access_token"]) >= 32


def test_token_accepts_credentials_in_form(simulator) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": MAILBOX_CLIENT[0],
        "client_secret": MAILBOX_CLIENT[1],
    }

    response = httpx.post(f"{simulator.url}/v2/auth/token", data=form, trust_env=False)

    assert response.status_code == 200


def test_token_rejects_wrong_secret(simulator) -> None:
    response = httpx.post(
        f"{simulator.url}/v2/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(MAILBOX_CLIENT[0], "wrong"),
        trust_env=False,
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_token_rejects_other_grant_type(simulator) -> None:
    response = httpx.post(
        f"{simulator.url}/v2/auth/token",
        data={"grant_type": "password"},
        auth=MAILBOX_CLIENT,
        trust_env=False,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic bWFpbGJveDpzZWNyZXQ="])
def test_routes_require_bearer_token(simulator, authorization) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = httpx.post(f"{simulator.url}{USERMATCH_URL}", json={"list": []}, headers=headers, trust_env=False)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_other_tenant_forbidden(mailbox_client) -> None:
    response = mailbox_client.post("/v2/tenant/other-tenant/usermatch/ssn", json={"list": []})

    assert response.status_code == 403
    assert "other-tenant" in response.json()["message"]


def test_usermatch_lists_numbers_with_mailbox(mailbox_client) -> None:
    numbers = [make_personal_number(serial) for serial in range(40)]
    expected = [number for number in numbers if has_mailbox(number, MAILBOX_CONFIG)]

    first = mailbox_client.post(USERMATCH_URL, json={"list": numbers})
    second = mailbox_client.post(USERMATCH_URL, json={"list": list(reversed(numbers))})

    assert first.status_code == 200
    assert first.json()["list"] == expected
    assert second.json()["list"] == list(reversed(expected))
    assert 0 < len(expected) < len(numbers)


def test_usermatch_rejects_invalid_number(mailbox_client) -> None:
    numbers = [make_personal_number(1), "19800101-0001"]

    response = mailbox_client.post(USERMATCH_URL, json={"list": numbers})

    assert response.status_code == 400
    error = response.json()
    assert error["field"] == "list[1]"
    assert "12 digits" in error["message"]


def test_has_mailbox_fraction_near_configured() -> None:
    numbers = [make_personal_number(serial, birth_date=f"19{50 + serial // 1000}0101") for serial in range(3000)]

    share = sum(has_mailbox(number, MAILBOX_CONFIG) for number in numbers) / len(numbers)

    assert 0.65 < share < 0.75


def test_has_mailbox_follows_allow_and_deny_lists() -> None:
    without, with_mailbox = numbers_with_mailbox(1, wanted=False)[0], numbers_with_mailbox(1)[0]
    config = MAILBOX_CONFIG.model_copy(update={"match_allow": [without], "match_deny": [with_mailbox]})

    assert has_mailbox(without, config) is True
    assert has_mailbox(with_mailbox, config) is False


def test_content_created_then_delivered(mailbox_client, control) -> None:
    ssn = numbers_with_mailbox(1)[0]

    response = mailbox_client.post(CONTENT_URL, json=invoice_content(ssn, make_ocr(1001)))

    assert response.status_code == 201
    key = response.json()["key"]
    assert response.headers["location"] == f"{CONTENT_URL}/{key}"
    pending = mailbox_client.get(f"{CONTENT_URL}/{key}/status").json()
    assert pending["status"] == "pending"
    assert pending["delivered_via"] is None
    delivered = wait_for_status(mailbox_client, key, "delivered")
    assert delivered["status"] == "delivered"
    assert delivered["delivered_via"] == "digital"
    assert delivered["key"] == key
    assert delivered["updated_at"] > pending["updated_at"]
    records = messages(control)
    assert [record["message_id"] for record in records] == [key]
    assert records[0]["recipient"] == ssn
    assert stats(control)["messages_accepted"] == 1


def test_status_of_unknown_key_is_404(mailbox_client) -> None:
    response = mailbox_client.get(f"{CONTENT_URL}/no-such-key/status")

    assert response.status_code == 404
    assert response.json()["code"] == "content_not_found"


def test_letter_to_business_accepted(mailbox_client) -> None:
    vat_number = next(number for serial in range(1000) if has_mailbox(number := f"SE55{serial:08d}01", MAILBOX_CONFIG))
    letter = {
        "vat_number": vat_number,
        "subject": "Kreditnota januari",
        "type": "letter",
        "generated_at": "2025-01-15",
        "parts": [
            {
                "name": "kredit.pdf",
                "data": base64.b64encode(b"%PDF-1.7\n").decode(),
                "content_type": "application/pdf",
            }
        ],
    }

    response = mailbox_client.post(CONTENT_URL, json=letter)

    assert response.status_code == 201


def test_idempotency_key_header_deduplicates(mailbox_client, control) -> None:
    ssn = numbers_with_mailbox(1)[0]
    headers = {"Idempotency-Key": "inv-1-mailbox-1"}
    first = mailbox_client.post(CONTENT_URL, json=invoice_content(ssn, make_ocr(1001)), headers=headers)

    again = mailbox_client.post(
        CONTENT_URL,
        json=invoice_content(ssn, make_ocr(1001), subject="Faktura januari (ny)"),
        headers=headers,
    )

    assert again.status_code == 201
    assert again.json()["key"] == first.json()["key"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(messages(control)) == 1
    assert stats(control)["duplicates_offered"] == 1


def test_identical_payload_deduplicates(mailbox_client, control) -> None:
    ssn = numbers_with_mailbox(1)[0]
    content = invoice_content(ssn, make_ocr(1001))
    first = mailbox_client.post(CONTENT_URL, json=content)

    again = mailbox_client.post(CONTENT_URL, json=content, headers={"Idempotency-Key": "another-key"})

    assert again.json()["key"] == first.json()["key"]
    assert len(messages(control)) == 1
    assert stats(control)["duplicates_offered"] == 1
    found = mailbox_client.get(f"{CONTENT_URL}/by-idempotency-key/another-key")
    assert found.json()["key"] == first.json()["key"]


def test_different_payloads_are_different_content(mailbox_client, control) -> None:
    ssn = numbers_with_mailbox(1)[0]

    first = mailbox_client.post(CONTENT_URL, json=invoice_content(ssn, make_ocr(1001)))
    second = mailbox_client.post(CONTENT_URL, json=invoice_content(ssn, make_ocr(1002)))

    assert first.json()["key"] != second.json()["key"]
    assert stats(control)["duplicates_offered"] == 0


def test_lookup_by_idempotency_key(mailbox_client) -> None:
    ssn = numbers_with_mailbox(1)[0]
    created = mailbox_client.post(
        CONTENT_URL, json=invoice_content(ssn, make_ocr(1001)), headers={"Idempotency-Key": "inv-1-mailbox-1"}
    ).json()

    response = mailbox_client.get(f"{CONTENT_URL}/by-idempotency-key/inv-1-mailbox-1")

    assert response.status_code == 200
    record = response.json()
    assert record["key"] == created["key"]
    assert record["idempotency_key"] == "inv-1-mailbox-1"
    assert record["type"] == "invoice"
    assert record["status"] == "pending"


def test_lookup_by_unknown_idempotency_key_is_404(mailbox_client) -> None:
    response = mailbox_client.get(f"{CONTENT_URL}/by-idempotency-key/never-sent")

    assert response.status_code == 404
    assert response.json()["code"] == "content_not_found"


def test_recipient_without_mailbox_rejected(mailbox_client, control) -> None:
    ssn = numbers_with_mailbox(1, wanted=False)[0]

    response = mailbox_client.post(CONTENT_URL, json=invoice_content(ssn, make_ocr(1001)))

    assert response.status_code == 404
    assert response.json()["code"] == "recipient_not_found"
    assert ssn not in response.text
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


def _without_payment(content: dict) -> dict:
    del content["payment_multiple_options"]
    return content


def _option(content: dict, **changes) -> dict:
    content["payment_multiple_options"]["options"][0].update(changes)
    return content


def _payment(content: dict, **changes) -> dict:
    content["payment_multiple_options"].update(changes)
    return content


def _part(content: dict, **changes) -> dict:
    content["parts"][0].update(changes)
    return content


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda content: {**content, "ssn": content["ssn"][:-1] + str((int(content["ssn"][-1]) + 1) % 10)},
            "ssn",
        ),
        (lambda content: {**content, "ssn": "8001010001"}, "ssn"),
        (lambda content: {**content, "vat_number": "SE556677889901"}, "ssn"),
        (lambda content: {key: value for key, value in content.items() if key != "ssn"}, "ssn"),
        (lambda content: {**content, "subject": " "}, "subject"),
        (lambda content: {**content, "subject": f"Faktura till {content['ssn']}"}, "subject"),
        (lambda content: {**content, "type": "memo"}, "type"),
        (lambda content: {**content, "generated_at": "igår"}, "generated_at"),
        (lambda content: {**content, "parts": []}, "parts"),
        (lambda content: _part(content, content_type="text/plain"), "parts[0].content_type"),
        (lambda content: _part(content, data="not base64!"), "parts[0].data"),
        (lambda content: _part(content, data=base64.b64encode(b"plain text").decode()), "parts[0].data"),
        (lambda content: _part(content, name=""), "parts[0].name"),
        (_without_payment, "payment_multiple_options"),
        (lambda content: _payment(content, payable="yes"), "payment_multiple_options.payable"),
        (lambda content: _payment(content, currency="EUR"), "payment_multiple_options.currency"),
        (lambda content: _payment(content, method="3"), "payment_multiple_options.method"),
        (lambda content: _payment(content, account="BG 5050"), "payment_multiple_options.account"),
        (lambda content: _payment(content, options=[]), "payment_multiple_options.options"),
        (lambda content: _option(content, amount="12.345"), "payment_multiple_options.options[0].amount"),
        (lambda content: _option(content, amount="0"), "payment_multiple_options.options[0].amount"),
        (
            lambda content: _option(content, due_date="31/01/2025"),
            "payment_multiple_options.options[0].due_date",
        ),
        (lambda content: _option(content, type="SE_BG"), "payment_multiple_options.options[0].type"),
        (
            lambda content: _option(content, reference="10010"),
            "payment_multiple_options.options[0].reference",
        ),
        (lambda content: {**content, "type": "letter"}, "payment_multiple_options"),
    ],
)
def test_content_validation_error_names_field(mailbox_client, control, mutate, field) -> None:
    content = mutate(invoice_content(numbers_with_mailbox(1)[0], make_ocr(1001)))

    response = mailbox_client.post(CONTENT_URL, json=content)

    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid_field"
    assert error["field"] == field
    assert field.split(".")[-1].split("[")[0] in error["message"]
    assert messages(control) == []


def test_unpayable_invoice_with_zero_amount_accepted(mailbox_client) -> None:
    content = invoice_content(numbers_with_mailbox(1)[0], make_ocr(1001))
    content["payment_multiple_options"]["payable"] = False
    content["payment_multiple_options"]["options"][0]["amount"] = "0"

    response = mailbox_client.post(CONTENT_URL, json=content)

    assert response.status_code == 201
