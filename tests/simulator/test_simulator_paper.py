"""Print partner contract of the simulator, over real HTTP."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest
from simulator_support import (
    PAPER_AUTH,
    PAPER_POST_DELAY_S,
    PAPER_PRINT_DELAY_S,
    RETURNED_POSTAL_CODE,
    free_port,
    print_job,
    simulator_config,
)

from invoice_delivery.simulator import SimulatorProcess


def stats(control: httpx.Client) -> dict:
    return control.get("/_sim/stats").json()["paper"]


def messages(control: httpx.Client) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "paper"}).json()


def statuses_until_final(client: httpx.Client, job_id: str, timeout_s: float = 5.0) -> list[str]:
    """Poll the job and return the distinct statuses seen, in order, until posted or returned."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/print-jobs/{job_id}").json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in ("posted", "returned"):
            break
        time.sleep(0.02)
    return seen


def test_job_received_printed_posted(paper_client, control) -> None:
    response = paper_client.post("/print-jobs", json=print_job(), headers={"Idempotency-Key": "inv-1-paper-1"})

    assert response.status_code == 201
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/print-jobs/{job_id}"
    assert statuses_until_final(paper_client, job_id) == ["received", "printed", "posted"]
    final = paper_client.get(f"/print-jobs/{job_id}").json()
    assert final["reason"] is None
    [record] = messages(control)
    assert record["message_id"] == job_id
    assert record["recipient"] == "90327"
    assert record["body"]["options"] == {"duplex": True, "colour": False, "postage": "B"}
    assert record["body"]["documents"] == ["faktura.pdf"]
    counters = stats(control)
    assert counters["messages_accepted"] == 1
    assert sum(counters["accepted_per_second"].values()) == 1


def test_listed_postal_code_returned(paper_client) -> None:
    job_id = paper_client.post("/print-jobs", json=print_job(postal_code=RETURNED_POSTAL_CODE)).json()["job_id"]

    seen = statuses_until_final(paper_client, job_id)

    assert seen == ["received", "printed", "returned"]
    final = paper_client.get(f"/print-jobs/{job_id}").json()
    assert "returned to sender" in final["reason"]


def test_status_timing_follows_delays(paper_client) -> None:
    started = time.monotonic()
    job_id = paper_client.post("/print-jobs", json=print_job()).json()["job_id"]

    statuses_until_final(paper_client, job_id)

    assert time.monotonic() - started >= PAPER_PRINT_DELAY_S + PAPER_POST_DELAY_S


def test_options_default_when_missing(paper_client, control) -> None:
    job = print_job()
    del job["options"]

    response = paper_client.post("/print-jobs", json=job)

    assert response.status_code == 201
    assert messages(control)[0]["body"]["options"] == {"duplex": False, "colour": False, "postage": "B"}


def test_duplicate_key_returns_first_job(paper_client, control) -> None:
    first = paper_client.post("/print-jobs", json=print_job(), headers={"Idempotency-Key": "inv-1-paper-1"})

    again = paper_client.post(
        "/print-jobs", json=print_job(postal_code="111 22"), headers={"Idempotency-Key": "inv-1-paper-1"}
    )

    assert again.status_code == 201
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(messages(control)) == 1
    assert stats(control)["duplicates_offered"] == 1


def _address(job: dict, **changes) -> dict:
    job["address"].update(changes)
    return job


def _document(job: dict, **changes) -> dict:
    job["documents"][0].update(changes)
    return job


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (print_job(documents=[]), "documents"),
        (_document(print_job(), content_type="image/png"), "documents[0].content_type"),
        (_document(print_job(), data="not base64!"), "documents[0].data"),
        (_document(print_job(), data=base64.b64encode(b"plain text").decode()), "documents[0].data"),
        (_document(print_job(), name=""), "documents[0].name"),
        (print_job(address="Storgatan 1"), "address"),
        (_address(print_job(), street=" "), "address.street"),
        (_address(print_job(), city=None), "address.city"),
        (_address(print_job(), country="Sverige"), "address.country"),
        (_address(print_job(), postal_code="9032"), "address.postal_code"),
        (print_job(options={"duplex": "yes"}), "options.duplex"),
        (print_job(options={"postage": "C"}), "options.postage"),
        (print_job(options={"staple": True}), "options.staple"),
    ],
)
def test_invalid_job_names_field(paper_client, control, job, field) -> None:
    response = paper_client.post("/print-jobs", json=job)

    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid_field"
    assert error["field"] == field
    assert "Storgatan" not in error["message"]
    assert messages(control) == []
    assert stats(control)["rejected"] == 1


def test_foreign_postal_code_not_checked(paper_client) -> None:
    job = _address(print_job(), postal_code="0150", city="Oslo", country="NO")

    response = paper_client.post("/print-jobs", json=job)

    assert response.status_code == 201


def test_rejected_postal_code_422(paper_client, control) -> None:
    control.post("/_sim/faults", json={"paper": {"reject_recipients": ["90327"]}})

    response = paper_client.post("/print-jobs", json=print_job())

    assert response.status_code == 422
    assert response.json()["code"] == "address_rejected"
    assert messages(control) == []
    assert stats(control)["faults_injected"] == {"reject_recipient": 1}


def test_injected_5xx_records_nothing(paper_client, control) -> None:
    control.post("/_sim/faults", json={"paper": {"error_5xx_rate": 1.0}})

    response = paper_client.post("/print-jobs", json=print_job())

    assert response.status_code == 503
    assert messages(control) == []


@pytest.mark.parametrize("auth", [None, (PAPER_AUTH[0], "wrong")])
def test_routes_require_basic_auth(simulator, control, auth) -> None:
    response = httpx.post(f"{simulator.url}/print-jobs", json=print_job(), auth=auth, trust_env=False)

    assert response.status_code == 401
    assert messages(control) == []


def test_lookup_by_idempotency_key(paper_client) -> None:
    sent = paper_client.post("/print-jobs", json=print_job(), headers={"Idempotency-Key": "inv-1-paper-1"}).json()

    response = paper_client.get("/print-jobs/by-idempotency-key/inv-1-paper-1")

    assert response.status_code == 200
    record = response.json()
    assert record["job_id"] == sent["job_id"]
    assert record["idempotency_key"] == "inv-1-paper-1"
    assert record["status"] == "received"
    assert "address" not in record


def test_lookup_and_status_unknown_404(paper_client) -> None:
    lookup = paper_client.get("/print-jobs/by-idempotency-key/never-sent")
    status = paper_client.get("/print-jobs/no-such-job")

    assert lookup.status_code == 404
    assert status.status_code == 404
    assert status.json()["code"] == "job_not_found"


@pytest.fixture(scope="module")
def returning_simulator() -> Iterator[SimulatorProcess]:
    """A simulator whose print partner returns half of the jobs."""
    base = simulator_config(None)
    paper = base.paper.model_copy(update={"return_rate": 0.5, "print_delay_s": 0.0, "post_delay_s": 0.0})
    with SimulatorProcess(free_port(), base.model_copy(update={"paper": paper})) as process:
        yield process


def test_return_rate_returns_some_jobs(returning_simulator) -> None:
    with httpx.Client(base_url=returning_simulator.url, auth=PAPER_AUTH, trust_env=False, timeout=10) as client:
        job_ids = [client.post("/print-jobs", json=print_job()).json()["job_id"] for _ in range(20)]
        final = [client.get(f"/print-jobs/{job_id}").json()["status"] for job_id in job_ids]

    assert set(final) == {"posted", "returned"}
