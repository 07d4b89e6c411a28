"""Measure validation throughput: N generated invoices through the Great Expectations suite.

Run: .venv/bin/python benchmarks/bench_validation.py [N] [BATCH_SIZE]  (defaults 100000 and 20000)

Starts a throw-away embedded PostgreSQL, generates N invoices, extracts them into batches and
times ``validate_batch`` per batch: loading the frame, the row rules, the GX suite, quarantine and
storing the result. Prints one line per batch and the totals.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from invoice_delivery import db, migrate
from invoice_delivery.context import RunContext
from invoice_delivery.embedded import EmbeddedPostgres
from invoice_delivery.extract import extract_window
from invoice_delivery.ingest.generator import generate
from invoice_delivery.validation import validate_batch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(n: int, batch_size: int) -> None:
    ctx = RunContext(dag_id="bench_validation", run_id="bench", task_id="validate")
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as folder:
        server = EmbeddedPostgres(root=Path(folder), port=_free_port())
        server.start()
        try:
            server.ensure_database("invoices")
            target = server.target("invoices")
            migrate.apply_migrations(target)
            now = datetime.now(UTC)
            with db.connect(target) as conn:
                report = generate(conn, n, seed=1, ready_from=now - timedelta(hours=1), ready_until=now)
                print(f"generated {report.invoices} invoices in {report.elapsed_seconds:.1f}s")
                batches = extract_window(conn, ctx, now - timedelta(hours=1), now, batch_size=batch_size)
                conn.commit()
                started = time.perf_counter()
                validated = quarantined = 0
                for batch_id in batches:
                    batch_started = time.perf_counter()
                    outcome = validate_batch(conn, ctx, batch_id)
                    conn.commit()
                    validated += outcome.validated
                    quarantined += outcome.quarantined
                    batch_seconds = time.perf_counter() - batch_started
                    print(f"batch {batch_id}: {outcome.validated} invoices in {batch_seconds:.2f}s")
                elapsed = time.perf_counter() - started
            print(f"validated: {validated}, quarantined: {quarantined}, seconds: {elapsed:.1f}")
            print(f"validation_invoices_per_s: {validated / elapsed:.0f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else 20_000)
