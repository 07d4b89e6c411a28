"""Starting and stopping the simulator process, its command line and its start-up configuration."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time

import httpx
import pytest
from simulator_support import free_port, sms_message

from invoice_delivery.simulator import SimulatorProcess, SimulatorStartError

DEFAULT_SMS_AUTH = ("sms-user", "sms-password")
DEFAULT_MAILBOX_CLIENT = ("mailbox-client", "mailbox-secret")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoice_delivery.simulator", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])
def test_cli_rejects_non_loopback_host(host: str) -> None:
    result = run_cli("--host", host, "--port", str(free_port()))

    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


def test_cli_reports_invalid_config(tmp_path) -> None:
    config_file = tmp_path / "simulator.json"
    config_file.write_text(json.dumps({"sms": {"receipts": {"url": "http://192.0.2.10/receipts"}}}))

    result = run_cli("--port", str(free_port()), "--config", str(config_file))

    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert "sms.receipts.url" in result.stderr


def test_cli_reports_unreadable_config(tmp_path) -> None:
    result = run_cli("--port", str(free_port()), "--config", str(tmp_path / "missing.json"))

    assert result.returncode == 2
    assert "cannot read simulator configuration" in result.stderr


def test_process_serves_health_and_stops() -> None:
    simulator = SimulatorProcess(free_port())

    with simulator:
        health = httpx.get(f"{simulator.url}/health", trust_env=False)
        output = simulator.output()

    assert health.json() == {
        "status": "ok",
        "channels": ["sms", "mailbox", "push", "email", "einvoice", "paper"],
        "smtp_port": simulator.smtp_port,
    }
    assert f"127.0.0.1:{simulator.port} with channels sms, mailbox" in output
    assert f"SMTP on port {simulator.smtp_port}" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{simulator.url}/health", trust_env=False, timeout=2)


def test_process_start_error_quotes_child_output() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        simulator = SimulatorProcess(busy.getsockname()[1], start_timeout_s=15)

        with pytest.raises(SimulatorStartError, match="(?i)address already in use"):
            simulator.start()


def test_process_rejects_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimulatorProcess(free_port(), host="0.0.0.0")


def test_faults_from_start_config() -> None:
    config = {"faults": {"sms": {"rate_429": 1.0, "retry_after_format": "http-date"}}}

    with SimulatorProcess(free_port(), config) as simulator:
        response = httpx.post(
            f"{simulator.url}/sms/send",
            json=sms_message("a"),
            auth=("sms-user", "sms-password"),
            trust_env=False,
        )

    assert response.status_code == 429
    assert response.headers["retry-after"].endswith("GMT")


def test_env_overrides_credentials() -> None:
    env = {
        "INVOICE_DELIVERY_SIM_SMS_USERNAME": "env-user",
        "INVOICE_DELIVERY_SIM_SMS_PASSWORD": "env-password",
        "INVOICE_DELIVERY_SIM_MAILBOX_TENANT_KEY": "env-tenant",
    }

    with SimulatorProcess(free_port(), env=env) as simulator:
        with httpx.Client(base_url=simulator.url, trust_env=False) as client:
            default_credentials = client.post("/sms/send", json=sms_message("a"), auth=("sms-user", "sms-password"))
            env_credentials = client.post("/sms/send", json=sms_message("a"), auth=("env-user", "env-password"))
            token = client.post(
                "/v2/auth/token",
                data={"grant_type": "client_credentials"},
                auth=("mailbox-client", "mailbox-secret"),
            ).json()["access_token"]
            tenant = client.post(
                "/v2/tenant/env-tenant/usermatch/ssn",
                json={"list": []},
                headers={"Authorization": f"Bearer {token}"},
            )

    assert default_credentials.status_code == 401
    assert env_credentials.status_code == 202
    assert tenant.status_code == 200


def test_process_picks_free_smtp_port() -> None:
    first, second = SimulatorProcess(free_port()), SimulatorProcess(free_port())

    with first, second:
        with smtplib.SMTP(first.host, first.smtp_port, timeout=5) as session:
            code, _ = session.noop()

    assert code == 250
    assert first.smtp_port != second.smtp_port
    assert first.config.email.smtp_port == first.smtp_port


def test_process_honours_configured_smtp_port() -> None:
    smtp_port = free_port()

    from_argument = SimulatorProcess(free_port(), smtp_port=smtp_port)
    from_config = SimulatorProcess(free_port(), {"email": {"smtp_port": smtp_port}})

    assert from_argument.smtp_port == smtp_port
    assert from_config.smtp_port == smtp_port


def test_process_rejects_same_http_and_smtp_port() -> None:
    port = free_port()

    with pytest.raises(ValueError, match="its own port"):
        SimulatorProcess(port, smtp_port=port)


def test_process_start_error_names_busy_smtp_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        simulator = SimulatorProcess(free_port(), smtp_port=busy.getsockname()[1], start_timeout_s=15)

        with pytest.raises(SimulatorStartError, match="failed to start the SMTP server"):
            simulator.start()


def test_cli_serves_smtp_port() -> None:
    port, smtp_port = free_port(), free_port()
    command = [sys.executable, "-m", "invoice_delivery.simulator", "--port", str(port), "--smtp-port", str(smtp_port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = None
        deadline = time.monotonic() + 20
        while health is None and time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).json()
            except httpx.TransportError:
                time.sleep(0.05)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as session:
            code, _ = session.noop()
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert health is not None
    assert health["smtp_port"] == smtp_port
    assert code == 250


def test_cli_rejects_same_http_and_smtp_port() -> None:
    port = str(free_port())

    result = run_cli("--port", port, "--smtp-port", port)

    assert result.returncode == 2
    assert "--smtp-port" in result.stderr
