"""Apply the versioned SQL migrations in ``migrations/`` to the invoice database.

Each file ``NNNN_name.sql`` runs once, in order, in its own transaction, and is recorded with its
checksum in ``public.schema_migration``. An advisory lock keeps two migrators from racing. A file
that changed after it was applied is reported instead of being applied again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from invoice_delivery import db, settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 746_115_001  # any constant shared by every migrator of this project
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """Raised when the applied migrations do not match the files shipped with this version."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name!r} must be named NNNN_lowercase_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return migrations


def apply_migrations(
    target: settings.PostgresTarget | None = None, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Apply pending migrations; return the names of those applied by this call."""
    applied_now = []
    with db.connect(target, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS public.schema_migration ("
                " version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row["version"]: row for row in conn.execute("SELECT * FROM public.schema_migration")}
            for migration in load_migrations(directory):
                previous = done.get(migration.version)
                if previous:
                    if previous["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.name} was changed after it was applied; "
                            f"add a new migration file instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO public.schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("Applied migration %s", migration.name)
                applied_now.append(migration.name)
        except psycopg.Error as exc:
            raise MigrationError(f"migration failed on {conn.info.dbname}: {exc}") from exc
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
