"""Fixtures for end-to-end runs: Airflow's metadata database migrated once, the simulator running."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    }
    base.update(devenv.gateway_connections(simulator.port))
    return devenv.airflow_env(base)
