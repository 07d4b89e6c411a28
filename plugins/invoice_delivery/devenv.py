"""Assemble and run the local deployment: embedded PostgreSQL, Airflow, the gateway simulator.

Everything an external deployment would configure is read from the environment first; the
embedded defaults fill in only what is not set:

- ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``: Airflow's metadata database (default: database
  ``airflow`` on the embedded server);
- ``AIRFLOW_CONN_INVOICE_DB``: the invoice database (default: database ``invoices`` there);
- ``AIRFLOW_CONN_SMS_GATEWAY``, ``AIRFLOW_CONN_MAILBOX_GATEWAY``: the channel gateways (default: the
  simulator on ``127.0.0.1:INVOICE_DELIVERY_SIM_PORT``, 8025 unless set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoice_delivery import migrate, settings
from invoice_delivery.embedded import EmbeddedPostgres

DEFAULT_SIM_PORT = 8025
AIRFLOW_PARALLELISM = 4  # sized for a 2-core machine; raise it on bigger hosts


def simulator_port() -> int:
    return int(os.environ.get("INVOICE_DELIVERY_SIM_PORT", DEFAULT_SIM_PORT))


DEFAULT_RECEIVER_PORT = 8027
DEFAULT_SMTP_PORT = 8026


def simulator_smtp_port() -> int:
    return int(os.environ.get("INVOICE_DELIVERY_SMTP_PORT", DEFAULT_SMTP_PORT))


def receiver_port() -> int:
    return int(os.environ.get("INVOICE_DELIVERY_RECEIVER_PORT", DEFAULT_RECEIVER_PORT))


def gateway_connections(port: int, smtp_port: int | None = None,
                        extra_overrides: dict[str, dict] | None = None) -> dict[str, str]:
    """Return ``AIRFLOW_CONN_*`` values pointing every gateway at the simulator on ``port``.

    Credentials and webhook secrets are the simulator's local-only defaults.
    """
    from invoice_delivery.simulator.config import SimulatorConfig

    sim = SimulatorConfig()
    base = {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
    limits = {"rate_limit_per_s": 0, "timeout_s": 10}
    connections = {
        "sms": {**base, "login": sim.sms.username, "password": sim.sms.password,
                "extra": {**limits, "source": "Invoices", "concurrency": 4, "webhook_secret": sim.sms.webhook_secret}},
        "mailbox": {**base, "login": sim.mailbox.client_id, "password": sim.mailbox.client_secret,
                    "extra": {**limits, "tenant_key": sim.mailbox.tenant_key, "concurrency": 16}},
        "push": {**base, "password": sim.push.bearer_token,
                 "extra": {**limits, "project": sim.push.project, "concurrency": 16,
                           "webhook_secret": sim.push.webhook_secret}},
        "email": {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port or simulator_smtp_port(),
                  "schema": "smtp",
                  "login": sim.email.username, "password": sim.email.password,
                  "extra": {**limits, "concurrency": 8, "lookup_url": f"http://127.0.0.1:{port}",
                            "from_address": "no-reply@nordlys-energi.example.com",
                            "webhook_secret": sim.email.webhook_secret}},
        "einvoice": {**base, "login": sim.einvoice.username, "password": sim.einvoice.password,
                     "extra": {**limits, "concurrency": 8, "webhook_secret": sim.einvoice.webhook_secret}},
        "paper": {**base, "login": sim.paper.username, "password": sim.paper.password,
                  "extra": {**limits, "concurrency": 4}},
    }
    for channel, extra in (extra_overrides or {}).items():
        connections[channel]["extra"].update(extra)
    return {f"AIRFLOW_CONN_{channel.upper()}_GATEWAY": json.dumps(conn) for channel, conn in connections.items()}


def simulator_config(receipt_base_url: str | None, **overrides: dict) -> dict:
    """Return a simulator configuration that sends every channel's receipts to ``receipt_base_url``."""
    config: dict = {}
    if receipt_base_url:
        for channel in ("sms", "push", "email", "einvoice"):
            config[channel] = {"receipts": {"url": f"{receipt_base_url}/receipts/{channel}", "delay_s": 1.0}}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for Airflow commands, keeping every value the caller already set."""
    env = dict(os.environ if base is None else base)
    home = settings.data_dir() / "airflow"
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(AIRFLOW_PARALLELISM),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API__HOST": "127.0.0.1",  # the local-only login must not be reachable from other hosts
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.embedded_target(settings.AIRFLOW_DB_NAME).sqlalchemy_url(),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW_CONN_INVOICE_DB": settings.embedded_target(settings.INVOICE_DB_NAME).airflow_uri(),
        "NO_PROXY": "127.0.0.1,localhost",
        **gateway_connections(simulator_port()),
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    # The venv's bin first: `airflow standalone` starts its components as `airflow` from PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def uses_embedded_airflow_db(env: dict[str, str]) -> bool:
    return env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == settings.embedded_target(
        settings.AIRFLOW_DB_NAME).sqlalchemy_url()


@contextmanager
def database(*, reset_invoices: bool = False) -> Iterator[EmbeddedPostgres | None]:
    """Start the embedded server when the invoice or Airflow database is embedded; stop it on exit
    if this call started it. Migrations are applied either way."""
    env = airflow_env()
    server = None
    started = False
    if settings.uses_embedded_postgres() or uses_embedded_airflow_db(env):
        server = EmbeddedPostgres()
        started = server.start()
    try:
        if server and settings.uses_embedded_postgres():
            if reset_invoices:
                _drop_database(server, settings.INVOICE_DB_NAME)
            server.ensure_database(settings.INVOICE_DB_NAME)
        if server and uses_embedded_airflow_db(env):
            server.ensure_database(settings.AIRFLOW_DB_NAME)
        migrate.apply_migrations(settings.invoice_db_target())
        yield server
    finally:
        if server and started:
            server.stop()


def _drop_database(server: EmbeddedPostgres, name: str) -> None:
    import psycopg

    with psycopg.connect(server.target("postgres").conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_airflow(args: list[str], env: dict[str, str], *, log_file: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run an ``airflow`` command from this environment, its output to ``log_file`` if given."""
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    if log_file is None:
        return subprocess.run([airflow, *args], env=env, check=check)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        result = subprocess.run([airflow, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    if check and result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"`airflow {' '.join(args)}` failed with exit {result.returncode}; "
                           f"last lines of {log_file}:\n{tail}")
    return result
