import psycopg
import pytest

from invoice_delivery import migrate


def test_migrations_idempotent(invoice_db):
    assert migrate.apply_migrations(invoice_db) == []


def test_audit_event_rejects_update_and_delete(conn):
    conn.execute("INSERT INTO delivery.audit_event (event_type) VALUES ('test')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        with conn.transaction():
            conn.execute("UPDATE delivery.audit_event SET event_type = 'changed'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        with conn.transaction():
            conn.execute("DELETE FROM delivery.audit_event")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        with conn.transaction():
            conn.execute("TRUNCATE delivery.audit_event")
    assert conn.execute("SELECT event_type FROM delivery.audit_event").fetchall() == [{"event_type": "test"}]


def test_changed_migration_rejected(invoice_db, tmp_path):
    for source in migrate.MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text() + "\n-- edited after release\n")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        migrate.apply_migrations(invoice_db, tmp_path)
