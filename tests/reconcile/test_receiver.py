import json
import time

import httpx

from invoice_delivery import webhooks


def _post(url, channel, payload, *, secret=None, timestamp=None, webhook_id=None):
    body = json.dumps(payload).encode()
    headers = webhooks.signed_headers(secret or f"secret-{channel}", body, webhook_id=webhook_id, now=timestamp)
    headers["content-type"] = "application/json"
    return httpx.post(f"{url}/receipts/{channel}", content=body, headers=headers)


def _audit(conn, event_type):
    return conn.execute("SELECT * FROM delivery.audit_event WHERE event_type = %s", (event_type,)).fetchall()


DLR = {"refId": "key-1", "id": "msg-1", "resultCode": 1001, "operator": "se.telia"}


def test_signed_receipt_stored(receiver_url, conn):
    response = _post(receiver_url, "sms", DLR)

    assert response.status_code == 202
    row = conn.execute("SELECT * FROM delivery.receipt").fetchone()
    assert row["receipt_id"] == response.json()["receipt_id"]
    assert (row["gateway_message_id"], row["reference"], row["status"]) == ("msg-1", "key-1", "delivered")
    assert row["payload"] == DLR


def test_forged_signature_rejected_and_audited(receiver_url, conn):
    response = _post(receiver_url, "sms", DLR, secret="not-the-secret")

    assert response.status_code == 401
    assert conn.execute("SELECT count(*) AS n FROM delivery.receipt").fetchone()["n"] == 0
    assert len(_audit(conn, "receipt_rejected")) == 1


def test_stale_timestamp_rejected(receiver_url, conn):
    response = _post(receiver_url, "sms", DLR, timestamp=int(time.time()) - 600)

    assert response.status_code == 401
    assert "timestamp" in response.json()["error"]
    assert len(_audit(conn, "receipt_rejected")) == 1


def test_replay_rejected_with_409(receiver_url, conn):
    first = _post(receiver_url, "sms", DLR, webhook_id="msg_replayed")
    second = _post(receiver_url, "sms", DLR, webhook_id="msg_replayed")

    assert first.status_code == 202
    assert second.status_code == 409
    assert conn.execute("SELECT count(*) AS n FROM delivery.receipt").fetchone()["n"] == 1
    assert len(_audit(conn, "receipt_replayed")) == 1


def test_unreadable_receipt_kept(receiver_url, conn):
    response = _post(receiver_url, "sms", {"id": "msg-1"})

    assert response.status_code == 400
    row = conn.execute("SELECT status, payload FROM delivery.receipt").fetchone()
    assert row == {"status": "invalid", "payload": {"id": "msg-1"}}


def test_unknown_channel_404(receiver_url):
    assert _post(receiver_url, "fax", DLR).status_code == 404
