"""Check that the send stage keeps an SMS gateway's ``rate_limit_per_s`` and uses at least 95 % of it.

The invoices get their own database. Extract, validate, route and render run through
``benchmarks.bare_pipeline`` with only SMS enabled, in one batch per worker. Then the worker
processes send their batches at the same time, each with the limiter the DAG's tasks use, which
PostgreSQL shares between them. One batch per worker keeps process start-up out of the window. The
figures come from the simulator's ``accepted_per_second`` counters (Unix second -> messages accepted).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from benchmarks.common import PROJECT_ROOT, SendScheduler, simulator_stats
from invoice_delivery import db, devenv, migrate
from invoice_delivery.embedded import EmbeddedPostgres


@dataclass
class RateResult:
    rate: float
    messages: int
    seconds: dict[int, int]
    full_seconds_mean: float
    max_per_second: int
    windows_over: int
    send_wall_s: float

    @property
    def utilisation(self) -> float:
        return self.full_seconds_mean / self.rate if self.rate else 0.0


def measure(server: EmbeddedPostgres, sim_url: str, sim_port: int, smtp_port: int, base_env: dict[str, str],
            logs: Path, *, rate: float, invoices: int, workers: int, seed: int = 99) -> RateResult:
    from invoice_delivery.ingest.generator import generate

    server.ensure_database("invoices_rate")
    target = server.target("invoices_rate")
    migrate.apply_migrations(target)
    with db.connect(target) as conn:
        now = datetime.now(UTC)
        generate(conn, invoices, seed=seed, ready_from=now - timedelta(minutes=4), ready_until=now)
    env = {
        **base_env,
        "AIRFLOW_CONN_INVOICE_DB": target.airflow_uri(),
        "INVOICE_DELIVERY_CHANNELS": "sms",
        **devenv.gateway_connections(sim_port, smtp_port=smtp_port,
                                     extra_overrides={"sms": {"rate_limit_per_s": rate}}),
    }
    prepared = subprocess.run(
        [sys.executable, "-m", "benchmarks.bare_pipeline", "--batch-size", str(-(-invoices // workers)),
         "--stop-after", "render"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if prepared.returncode != 0:
        raise RuntimeError(f"preparing the rate-limit run failed:\n{prepared.stderr[-3000:]}")
    with psycopg.connect(target.conninfo()) as conn:
        batch_ids = [row[0] for row in conn.execute("SELECT batch_id FROM delivery.batch ORDER BY batch_id")]

    with httpx.Client(trust_env=False, timeout=30) as client:
        client.post(f"{sim_url}/_sim/reset").raise_for_status()
    scheduler = SendScheduler(env, target, logs, run_id="rate", parallelism=workers, dag_id="bench_rate")
    result = scheduler.run(batch_ids, time.monotonic() + 600)
    if result.gave_up or result.exit_codes.get(0, 0) != len(batch_ids):
        raise RuntimeError(f"rate-limit sends did not all succeed: exit codes {dict(result.exit_codes)}; see {logs}")

    sms = simulator_stats(sim_url)["sms"]
    seconds = {int(second): int(count) for second, count in sms["accepted_per_second"].items()}
    ordered = sorted(seconds)
    # The first and last seconds are partial: the sends start and end inside them.
    full = [seconds[s] for s in range(ordered[0] + 1, ordered[-1])] if len(ordered) > 2 else []
    return RateResult(
        rate=rate, messages=sum(seconds.values()), seconds=seconds,
        full_seconds_mean=sum(full) / len(full) if full else 0.0,
        max_per_second=max(seconds.values()) if seconds else 0,
        windows_over=sum(1 for count in seconds.values() if count > rate),
        send_wall_s=result.elapsed_s,
    )


def describe(result: RateResult) -> str:
    series = json.dumps([result.seconds[s] for s in sorted(result.seconds)])
    return (f"SMS rate limit {result.rate:g}/s: {result.messages} messages in {len(result.seconds)} one-second "
            f"windows; mean of the full seconds {result.full_seconds_mean:.1f}/s ({100 * result.utilisation:.1f} % "
            f"of the limit), max {result.max_per_second}/s, {result.windows_over} windows above the limit; "
            f"per second: {series}")
