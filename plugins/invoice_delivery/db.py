"""Open connections to the invoice database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row

from invoice_delivery import settings


def airflow_target(conn_id: str = settings.INVOICE_DB_CONN_ID) -> settings.PostgresTarget:
    """Resolve the invoice database through Airflow's connections (env, secrets backend or API).

    Note:
        Call this only inside a running task or an Airflow command, never at DAG parse time.
    """
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    libpq_keys = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name", "options")
    return settings.PostgresTarget(
        host=conn.host or "127.0.0.1",
        port=int(conn.port or 5432),
        database=conn.schema or settings.INVOICE_DB_NAME,
        user=conn.login or "postgres",
        password=conn.password or None,
        options=tuple((key, str(extra[key])) for key in libpq_keys if key in extra),
    )


@contextmanager
def connect(target: settings.PostgresTarget | None = None, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """Open a connection that returns rows as dicts; commit on success, roll back on error."""
    target = target or settings.invoice_db_target()
    try:
        conn = psycopg.connect(target.conninfo(), autocommit=autocommit, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise psycopg.OperationalError(
            f"cannot connect to the invoice database at {target.describe()}: {exc}".strip()
        ) from exc
    with conn:
        yield conn
