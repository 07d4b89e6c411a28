"""SMS gateway contract of the simulator, over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest
from simulator_support import sms_message


def stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["sms"]


def messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "sms"}).json()


def test_send_queues_message(sms_client, control) -> None:
    before = int(time.time())

    response = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1"))

    assert response.status_code == 202
    reply = response.json()
    assert reply["resultCode"] == 1005
    assert reply["messageId"]
    records = messages(control)
    assert len(records) == 1
    assert records[0]["message_id"] == reply["messageId"]
    assert records[0]["idempotency_key"] == "inv-1-sms-1"
    assert records[0]["recipient"] == "+46701234567"
    assert records[0]["received_at"] >= before
    assert records[0]["body"]["userData"] == sms_message("x")["userData"]
    counters = stats(control)
    assert counters["requests"] == 1
    assert counters["messages_accepted"] == 1
    assert sum(counters["accepted_per_second"].values()) == 1


def test_sendbatch_replies_in_request_order(sms_client, control) -> None:
    batch = [sms_message("a"), sms_message("b", destination="0701234567"), sms_message("c")]

    response = sms_client.post("/sms/sendbatch", json={"messages": batch})

    assert response.status_code == 200
    replies = response.json()["messages"]
    assert [reply["resultCode"] for reply in replies] == [1005, 2, 1005]
    assert replies[1]["messageId"] is None
    assert "destination" in replies[1]["description"]
    assert [record["idempotency_key"] for record in messages(control)] == ["a", "c"]
    counters = stats(control)
    assert counters["messages_accepted"] == 2
    assert counters["rejected"] == 1


def test_sendbatch_accepts_thousand_messages(sms_client, control) -> None:
    batch = [sms_message(f"inv-{number}-sms-1", destination=f"+4670{number:07d}") for number in range(1000)]

    response = sms_client.post("/sms/sendbatch", json={"messages": batch})

    assert response.status_code == 200
    replies = response.json()["messages"]
    assert len(replies) == 1000
    assert all(reply["resultCode"] == 1005 for reply in replies)
    assert len({reply["messageId"] for reply in replies}) == 1000
    assert stats(control)["messages_accepted"] == 1000


@pytest.mark.parametrize("count", [0, 1001])
def test_sendbatch_rejects_batch_size(sms_client, control, count) -> None:
    batch = [sms_message(f"ref-{number}") for number in range(count)]

    response = sms_client.post("/sms/sendbatch", json={"messages": batch})

    assert response.status_code == 400
    assert "1 to 1000" in response.json()["description"]
    assert messages(control) == []


def test_sendbatch_rejects_body_without_list(sms_client) -> None:
    response = sms_client.post("/sms/sendbatch", json={"message": []})

    assert response.status_code == 400
    assert "messages" in response.json()["description"]


def test_send_rejects_invalid_json(sms_client) -> None:
    response = sms_client.post("/sms/send", content=b"{not json", headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["description"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"source": ""}, "source"),
        ({"source": "InvoiceSender"}, "source"),
        ({"source": "12345"}, "source"),
        ({"source": "Invoices", "sourceTON": "SHORTCODE"}, "source"),
        ({"sourceTON": "NATIONAL"}, "sourceTON"),
        ({"destination": "0701234567"}, "destination"),
        ({"destination": "+4670"}, "destination"),
        ({"destination": None}, "destination"),
        ({"userData": ""}, "userData"),
        ({"userData": "Betald ✓"}, "userData"),
        ({"dcs": "UTF8"}, "dcs"),
        ({"refId": ""}, "refId"),
        ({"refId": 17}, "refId"),
        ({"relativeValidityTime": -1}, "relativeValidityTime"),
        ({"useDeliveryReport": "yes"}, "useDeliveryReport"),
        ({"customParameters": {"invoice": 17}}, "customParameters"),
    ],
)
def test_send_validation_error_names_field(sms_client, control, overrides, field) -> None:
    response = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1", **overrides))

    assert response.status_code == 400
    reply = response.json()
    assert reply["resultCode"] == 2
    assert reply["messageId"] is None
    assert field in reply["description"]
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


def test_send_validation_error_never_quotes_destination(sms_client) -> None:
    response = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1", destination="46701234567"))

    assert response.status_code == 400
    assert "46701234567" not in response.json()["description"]


def test_send_accepts_numeric_sources(sms_client) -> None:
    shortcode = sms_client.post("/sms/send", json=sms_message("a", source="72456", sourceTON="SHORTCODE"))
    msisdn = sms_client.post("/sms/send", json=sms_message("b", source="+46700000000", sourceTON="MSISDN"))

    assert shortcode.status_code == 202
    assert msisdn.status_code == 202


@pytest.mark.parametrize("auth", [None, ("sms-test-user", "wrong"), ("someone", "sms-test-password")])
def test_send_requires_basic_auth(simulator, control, auth) -> None:
    response = httpx.post(f"{simulator.url}/sms/send", json=sms_message("a"), auth=auth, trust_env=False)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert messages(control) == []


def test_lookup_requires_basic_auth(simulator) -> None:
    response = httpx.get(f"{simulator.url}/sms/messages/by-ref/a", trust_env=False)

    assert response.status_code == 401


def test_duplicate_ref_id_returns_first_message(sms_client, control) -> None:
    first = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1")).json()

    again = sms_client.post("/sms/send", json=sms_message("inv-1-sms-1", userData="Retried text"))

    assert again.status_code == 202
    assert again.json()["messageId"] == first["messageId"]
    assert len(messages(control)) == 1
    counters = stats(control)
    assert counters["duplicates_offered"] == 1
    assert counters["messages_accepted"] == 1


def test_duplicate_ref_id_within_batch(sms_client, control) -> None:
    batch = [sms_message("same"), sms_message("same")]

    replies = sms_client.post("/sms/sendbatch", json={"messages": batch}).json()["messages"]

    assert replies[0]["messageId"] == replies[1]["messageId"]
    assert stats(control)["duplicates_offered"] == 1
    assert len(messages(control)) == 1


def test_lookup_by_ref_returns_record(sms_client) -> None:
    sent = sms_client.post("/sms/send", json=sms_message("inv-9-sms-2")).json()

    response = sms_client.get("/sms/messages/by-ref/inv-9-sms-2")

    assert response.status_code == 200
    record = response.json()
    assert record["messageId"] == sent["messageId"]
    assert record["refId"] == "inv-9-sms-2"
    assert record["destination"] == "+46701234567"
    assert record["resultCode"] == 1005
    assert record["segments"] == 1
    assert record["receivedAt"].endswith("Z")


def test_lookup_by_unknown_ref_is_404(sms_client) -> None:
    response = sms_client.get("/sms/messages/by-ref/never-sent")

    assert response.status_code == 404
    assert "never-sent" in response.json()["description"]


@pytest.mark.parametrize(
    ("text", "dcs", "segments"),
    [
        ("a" * 160, "GSM", 1),
        ("a" * 161, "GSM", 2),
        ("€" * 80, "GSM", 1),
        ("€" * 81, "GSM", 2),
        ("å" * 306, "GSM", 2),
        ("✓" * 70, "UCS2", 1),
        ("✓" * 71, "UCS2", 2),
    ],
)
def test_lookup_counts_segments(sms_client, text, dcs, segments) -> None:
    sms_client.post("/sms/send", json=sms_message("seg", userData=text, dcs=dcs))

    assert sms_client.get("/sms/messages/by-ref/seg").json()["segments"] == segments
