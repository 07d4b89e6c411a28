"""Resolve where the project's state lives and how to reach the invoice database.

Every setting comes from an environment variable with an embedded-default fallback, so a
deployment against an external PostgreSQL changes configuration only:

- ``AIRFLOW_CONN_INVOICE_DB``: the invoice database as an Airflow connection (URI or JSON form).
  Unset means the embedded PostgreSQL started by :mod:`invoice_delivery.embedded`.
- ``INVOICE_DELIVERY_DATA``: folder for the embedded server's files, Airflow's home and logs
  (default ``.data/`` in the project).
- ``INVOICE_DELIVERY_PG_PORT``: loopback port of the embedded server (default 54329).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INVOICE_DB_CONN_ID = "invoice_db"
INVOICE_DB_NAME = "invoices"
AIRFLOW_DB_NAME = "airflow"
DEFAULT_PG_PORT = 54329


class ConfigurationError(ValueError):
    """Raised when a setting is present but cannot be used; the message names it and the fix."""


def data_dir() -> Path:
    return Path(os.environ.get("INVOICE_DELIVERY_DATA", PROJECT_ROOT / ".data")).resolve()


def embedded_port() -> int:
    raw = os.environ.get("INVOICE_DELIVERY_PG_PORT", str(DEFAULT_PG_PORT))
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1024 <= port <= 65535:
        raise ConfigurationError(
            f"INVOICE_DELIVERY_PG_PORT={raw!r} is not a usable port; set a number from 1024 to 65535"
        )
    return port


@dataclass(frozen=True)
class PostgresTarget:
    """Where a PostgreSQL database is: enough to build a psycopg conninfo or a SQLAlchemy URL."""

    host: str
    port: int
    database: str
    user: str
    password: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def conninfo(self) -> str:
        """Return a libpq URI; psycopg and psql both take it."""
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        query = "&".join(f"{key}={quote(value, safe='')}" for key, value in self.options)
        uri = f"postgresql://{credentials}@{self.host}:{self.port}/{quote(self.database, safe='')}"
        return f"{uri}?{query}" if query else uri

    def sqlalchemy_url(self) -> str:
        return self.conninfo().replace("postgresql://", "postgresql+psycopg2://", 1)

    def airflow_uri(self) -> str:
        """Return the form ``AIRFLOW_CONN_*`` variables take (scheme ``postgres``)."""
        return self.conninfo().replace("postgresql://", "postgres://", 1)

    def with_database(self, database: str) -> PostgresTarget:
        return PostgresTarget(self.host, self.port, database, self.user, self.password, self.options)

    def describe(self) -> str:
        """Return host, port and database without credentials, for logs and messages."""
        return f"{self.host}:{self.port}/{self.database}"


def embedded_target(database: str = INVOICE_DB_NAME) -> PostgresTarget:
    return PostgresTarget(host="127.0.0.1", port=embedded_port(), database=database, user="postgres")


def parse_connection(value: str, *, source: str = "AIRFLOW_CONN_INVOICE_DB") -> PostgresTarget:
    """Parse an Airflow connection in URI or JSON form into a :class:`PostgresTarget`.

    Extras other than libpq options (``sslmode``, ``sslrootcert``, ``connect_timeout``,
    ``application_name``, ``options``) are ignored.
    """
    value = value.strip()
    if value.startswith("{"):
        try:
            fields = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{source} is not valid JSON ({exc.msg}); use a URI or JSON object") from exc
        extra = fields.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra or "{}")
        host, port = fields.get("host"), fields.get("port") or 5432
        database, user, password = fields.get("schema"), fields.get("login"), fields.get("password")
    else:
        parts = urlsplit(value)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigurationError(
                f"{source} has scheme {parts.scheme!r}; expected postgres://user:password@host:port/database"
            )
        extra = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        extra = {key: unquote(val) for key, val in extra.items()}
        host, port = unquote(parts.hostname or ""), parts.port or 5432
        database = unquote(parts.path.lstrip("/"))
        user = unquote(parts.username or "")
        password = unquote(parts.password) if parts.password else None
    if not host or not database or not user:
        raise ConfigurationError(
            f"{source} needs a host, a database (schema) and a login; "
            f"got host={host!r}, database={database!r}, login={user!r}"
        )
    libpq_keys = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name", "options")
    options = tuple((key, str(extra[key])) for key in libpq_keys if key in extra)
    return PostgresTarget(host, int(port), database, user, password, options)


def invoice_db_target() -> PostgresTarget:
    """Return the invoice database: the configured connection, else the embedded default."""
    configured = os.environ.get("AIRFLOW_CONN_INVOICE_DB")
    if configured:
        return parse_connection(configured)
    return embedded_target(INVOICE_DB_NAME)


def uses_embedded_postgres() -> bool:
    return not os.environ.get("AIRFLOW_CONN_INVOICE_DB")
