"""Fixtures for the channel client tests: a real simulator process on a free loopback port.

One simulator serves the session and is reset before each test. A second one, whose mailbox,
access point and print partner fail every delivery, serves the tests of failed statuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from channel_test_support import free_port, simulator_config

from invoice_delivery.simulator import SimulatorProcess


@pytest.fixture(scope="session")
def simulator_process() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(free_port(), simulator_config()) as process:
        yield process


@pytest.fixture(scope="session")
def failing_simulator() -> Iterator[SimulatorProcess]:
    """A simulator whose mailbox, access point and print partner fail every delivery."""
    config = simulator_config(
        mailbox={"failure_rate": 1.0},
        einvoice={"rejection_rate": 1.0},
        paper={"return_rate": 1.0},
    )
    with SimulatorProcess(free_port(), config) as process:
        yield process


@pytest.fixture
def sim(simulator_process: SimulatorProcess) -> SimulatorProcess:
    """Return the session's simulator after a reset."""
    httpx.post(f"{simulator_process.url}/_sim/reset", trust_env=False).raise_for_status()
    return simulator_process


@pytest.fixture
def control(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    """Client for the /_sim routes."""
    with httpx.Client(base_url=sim.url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def set_faults(control: httpx.Client) -> Callable[[str, dict], None]:
    """Return a function that replaces one channel's faults."""

    def apply(channel: str, faults: dict) -> None:
        response = control.post("/_sim/faults", json={channel: faults})
        assert response.status_code == 200, response.text

    return apply


@pytest.fixture
def channel_stats(control: httpx.Client) -> Callable[[str], dict]:
    """Return a function that reads one channel's counters."""
    return lambda channel: control.get("/_sim/stats").json()[channel]
