"""Fixtures for end-to-end runs: Airflow's metadata database migrated once, the simulator running."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from invoice_delivery import devenv, settings
from invoice_delivery.simulator.process import SimulatorProcess
from tests.conftest import free_port


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("airflow")


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(free_port()) as process:
        yield process


@pytest.fixture(scope="session")
def airflow_metadata(postgres, airflow_home) -> settings.PostgresTarget:
    """Create and migrate Airflow's metadata database once per session."""
    postgres.ensure_database("airflow_test")
    target = postgres.target("airflow_test")
    env = devenv.airflow_env({**os.environ, "AIRFLOW_HOME": str(airflow_home),
                              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": target.sqlalchemy_url()})
    devenv.run_airflow(["db", "migrate"], env, log_file=airflow_home / "db-migrate.log")
    return target


@pytest.fixture
def airflow_env(airflow_metadata, airflow_home, invoice_db, simulator) -> dict[str, str]:
    """Return the environment for Airflow commands against this test's invoice database."""
    base = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata.sqlalchemy_url(),
        "AIRFLOW_CONN_INVOICE_DB": invoice_db.airflow_uri(),
        "INVOICE_DELIVERY_SIM_PORT": str(simulator.port),
        # The same behaviour at any hour: quiet hours would hold SMS and push back overnight.
        "INVOICE_DELIVERY_QUIET_HOURS": "off",
    }
    base.update(devenv.gateway_connections(simulator.port, smtp_port=simulator.smtp_port))
    return devenv.airflow_env(base)


@pytest.fixture
def scheduler(airflow_env, airflow_home, airflow_metadata, tmp_path) -> Iterator[Callable[[], None]]:
    """Return a function that starts Airflow's api-server, dag-processor and scheduler (LocalExecutor).

    A test calls it once it has set up its data, so the scheduler's own runs do not race the setup.
    """
    import shutil
    import signal
    import subprocess
    import time

    import psycopg

    airflow = shutil.which("airflow", path=airflow_env["PATH"])
    api_port = free_port()
    processes: list[subprocess.Popen] = []

    def start() -> None:
        # Task processes report to the api-server's execution API, signed with a secret all components share.
        airflow_env.update({
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-jwt-secret",
        })
        for component in (["api-server", "--port", str(api_port)], ["dag-processor"], ["scheduler"]):
            log = (tmp_path / f"{component[0]}.log").open("w")
            processes.append(subprocess.Popen([airflow, *component], env=airflow_env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        while True:
            with psycopg.connect(airflow_metadata.conninfo()) as meta:
                found = meta.execute("SELECT count(*) FROM dag WHERE dag_id = 'invoice_delivery'").fetchone()[0]
            if found:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dag-processor did not register invoice_delivery; see {tmp_path}")
            time.sleep(1)

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
