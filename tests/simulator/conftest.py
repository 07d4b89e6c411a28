"""Fixtures for the gateway simulator tests: a real simulator process and a real receipt receiver.

One simulator process serves the whole pytest session and is reset before each test that uses it.
Its receipts go to a small HTTP server on loopback run by these fixtures: SMS delivery reports to
``/receipts``, the other channels' receipts to ``/receipts/<channel>``.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from simulator_support import (
    EINVOICE_AUTH,
    EMAIL_AUTH,
    MAILBOX_CLIENT,
    PAPER_AUTH,
    PUSH_TOKEN,
    SMS_AUTH,
    free_port,
    simulator_config,
)

from invoice_delivery.simulator import SimulatorProcess


@dataclass
class ReceivedReceipt:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float  # time.monotonic() when the POST arrived


class ReceiptReceiver:
    """HTTP server on loopback that records every POST and responds with a chosen status."""

    def __init__(self) -> None:
        self.received: list[ReceivedReceipt] = []
        self.statuses: list[int] = []
        self._condition = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="receipt-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/receipts"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        with self._condition:
            self.received.clear()
            self.statuses.clear()

    def respond_next(self, *statuses: int) -> None:
        """Respond to the next POSTs with these statuses, then with 204 again."""
        with self._condition:
            self.statuses.extend(statuses)

    def on_path(self, path: str | None) -> list[ReceivedReceipt]:
        """Return the POSTs received so far, only those to ``path`` unless it is None."""
        with self._condition:
            return [receipt for receipt in self.received if path is None or receipt.path == path]

    def wait_for(self, count: int, timeout_s: float = 10.0, path: str | None = None) -> list[ReceivedReceipt]:
        """Wait until ``count`` POSTs (to ``path``, if given) arrived and return them; fail on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while len(found := self.on_path(path)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"receiver got {len(found)} receipts within {timeout_s} s, expected {count}")
                self._condition.wait(remaining)
            return found

    def _record(self, receipt: ReceivedReceipt) -> int:
        with self._condition:
            self.received.append(receipt)
            status = self.statuses.pop(0) if self.statuses else 204
            self._condition.notify_all()
            return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._record(ReceivedReceipt(self.path, headers, body, time.monotonic()))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="session")
def receiver() -> Iterator[ReceiptReceiver]:
    server = ReceiptReceiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def simulator_process(receiver: ReceiptReceiver) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(free_port(), simulator_config(receiver.url)) as process:
        yield process


@pytest.fixture
def simulator(simulator_process: SimulatorProcess, receiver: ReceiptReceiver) -> SimulatorProcess:
    """Return the session's simulator after resetting it and the receiver."""
    response = httpx.post(f"{simulator_process.url}/_sim/reset", trust_env=False)
    response.raise_for_status()
    receiver.clear()
    return simulator_process


@pytest.fixture
def control(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    """Client for the /_sim routes, without credentials."""
    with httpx.Client(base_url=simulator.url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def sms_client(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, auth=SMS_AUTH, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def push_client(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    """Client with the push API's bearer token."""
    headers = {"Authorization": f"Bearer {PUSH_TOKEN}"}
    with httpx.Client(base_url=simulator.url, headers=headers, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def email_lookup(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    """Client for the e-mail lookup route, with the SMTP credentials as basic auth."""
    with httpx.Client(base_url=simulator.url, auth=EMAIL_AUTH, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def smtp(simulator: SimulatorProcess) -> Iterator[smtplib.SMTP]:
    """An SMTP session with the simulator's SMTP server, not authenticated."""
    with smtplib.SMTP(simulator.host, simulator.smtp_port, timeout=10) as session:
        yield session


@pytest.fixture
def einvoice_client(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, auth=EINVOICE_AUTH, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def paper_client(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, auth=PAPER_AUTH, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def mailbox_client(simulator: SimulatorProcess) -> Iterator[httpx.Client]:
    """Client with a fresh bearer token from the mailbox token route."""
    with httpx.Client(base_url=simulator.url, timeout=10, trust_env=False) as client:
        response = client.post("/v2/auth/token", data={"grant_type": "client_credentials"}, auth=MAILBOX_CLIENT)
        response.raise_for_status()
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client
