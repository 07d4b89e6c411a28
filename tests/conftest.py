"""Shared fixtures: a real embedded PostgreSQL for the whole session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from invoice_delivery import migrate, settings
from invoice_delivery.embedded import EmbeddedPostgres

PEPPOL_SAMPLES = Path(os.environ.get("PEPPOL_SAMPLES_DIR", settings.PROJECT_ROOT / "include" / "samples" / "peppol"))
TEMPLATE_DB = "invoices_template"
_database_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> Iterator[EmbeddedPostgres]:
    """Start one embedded server for the test session, with a migrated template database."""
    server = EmbeddedPostgres(root=tmp_path_factory.mktemp("pg"), port=free_port())
    server.start()
    try:
        server.ensure_database(TEMPLATE_DB)
        migrate.apply_migrations(server.target(TEMPLATE_DB))
        yield server
    finally:
        server.stop()


@pytest.fixture
def invoice_db(postgres: EmbeddedPostgres) -> settings.PostgresTarget:
    """Return a new, migrated, empty invoice database for this test."""
    name = f"invoices_test_{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(postgres.target("postgres").conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    return postgres.target(name)


@pytest.fixture
def conn(invoice_db: settings.PostgresTarget) -> Iterator[psycopg.Connection]:
    from invoice_delivery import db

    with db.connect(invoice_db) as connection:
        yield connection


@pytest.fixture(scope="session")
def peppol_samples() -> list[Path]:
    files = sorted(PEPPOL_SAMPLES.glob("*.xml"))
    if not files:
        pytest.fail(f"no Peppol samples found in {PEPPOL_SAMPLES}; set PEPPOL_SAMPLES_DIR")
    return files
