"""Measure ready-to-accepted latency with invoices arriving at a steady rate and a real Airflow scheduler.

Each measurement gets its own invoice database and its own copy of a migrated Airflow metadata
database. A temporary DAG folder contains a copy of ``dags/invoice_delivery.py`` with the measured
schedule interval; nothing else in the copy changes. Airflow's dag-processor and scheduler
(LocalExecutor) run the DAG on that schedule while a thread inserts ``rate`` invoices every second
with ``ready_at`` in the second just passed. After the arrival window the run continues until every
arrived invoice is accepted by a gateway or held back for good (quarantined, unroutable, failed), or
until one schedule interval plus ``drain_extra_s`` has passed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import airflow_run
from benchmarks.common import PROJECT_ROOT
from invoice_delivery import db, migrate, settings
from invoice_delivery.embedded import EmbeddedPostgres

log = logging.getLogger("benchmarks")

DAG_FILE = PROJECT_ROOT / "dags" / "invoice_delivery.py"
INTERVAL_LINE = re.compile(r"^INTERVAL = timedelta\((minutes|seconds)=\d+\)$", re.MULTILINE)
SCHEDULE = re.compile(r"^(\d+)\s*(s|m|min)?$")
REGISTER_TIMEOUT_S = 180


@dataclass
class LatencyResult:
    interval_s: int
    arrival_s: float
    arrived: int
    accepted: int
    held_back: int
    pending: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None
    samples: list[float]
    runs: list[dict[str, Any]]
    arrival_rate: float


def parse_schedules(text: str) -> list[int]:
    """Parse ``"5,1,30s"`` into intervals in seconds: a bare number is minutes, ``Ns`` seconds, ``Nm`` minutes."""
    intervals = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = SCHEDULE.match(item)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"invalid schedule {item!r}: write minutes (5 or 5m) or seconds (30s), at least 1")
        value = int(match.group(1))
        intervals.append(value if match.group(2) == "s" else value * 60)
    return intervals


def schedule_name(interval_s: int) -> str:
    """Name an interval as the DAG would be configured: ``5-minute`` or ``30-second``."""
    return f"{interval_s // 60}-minute" if interval_s % 60 == 0 else f"{interval_s}-second"


def dag_folder(folder: Path, interval_s: int) -> Path:
    """Write a DAG folder with invoice_delivery on an ``interval_s`` schedule.

    Raises RuntimeError when the DAG file no longer has the ``INTERVAL = timedelta(...)`` line to replace.
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = DAG_FILE.read_text(encoding="utf-8")
    if not INTERVAL_LINE.search(text):
        raise RuntimeError(f"{DAG_FILE} has no line 'INTERVAL = timedelta(minutes=N)' or 'timedelta(seconds=N)'; "
                           "update INTERVAL_LINE in benchmarks/latency.py")
    (folder / DAG_FILE.name).write_text(
        INTERVAL_LINE.sub(f"INTERVAL = timedelta(seconds={interval_s})", text), encoding="utf-8")
    return folder


def _arrivals(target: settings.PostgresTarget, rate: int, seconds: float, stop: threading.Event,
              counter: list, seed: int) -> None:
    """Insert ``rate`` invoices at the start of every second for ``seconds``, ready_at in the second before."""
    from invoice_delivery.ingest.generator import generate

    started = time.monotonic()
    tick = 0
    with db.connect(target) as conn:
        while not stop.is_set() and tick < seconds:
            now = datetime.now(UTC)
            generate(conn, rate, seed=seed + tick, ready_from=now - timedelta(seconds=1), ready_until=now)
            conn.commit()
            counter[0] += rate
            tick += 1
            delay = started + tick - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -1:
                log.warning("Arrivals fall behind by %.1fs at second %d", -delay, tick)


def _start_components(env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    processes = []
    for component in ("dag-processor", "scheduler"):
        out = (logs / f"{component}.log").open("w")
        processes.append(subprocess.Popen([airflow, component], env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return processes


def _stop_components(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_registered(metadata: settings.PostgresTarget, dag_id: str, logs: Path) -> None:
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    while time.monotonic() < deadline:
        with psycopg.connect(metadata.conninfo()) as meta:
            if meta.execute("SELECT 1 FROM dag WHERE dag_id = %s", (dag_id,)).fetchone():
                return
        time.sleep(1)
    raise RuntimeError(f"the dag-processor did not register {dag_id} in {REGISTER_TIMEOUT_S}s; see {logs}")


def _progress(target: settings.PostgresTarget) -> tuple[int, int, int]:
    """Return (invoices, accepted on some attempt, held back for good)."""
    with psycopg.connect(target.conninfo()) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM billing.invoice),"
            " (SELECT count(DISTINCT invoice_id) FROM delivery.delivery WHERE accepted_at IS NOT NULL),"
            " (SELECT count(*) FROM delivery.document WHERE status IN ('quarantined', 'unroutable', 'failed'))"
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def _run_arrivals(server: EmbeddedPostgres, target: settings.PostgresTarget, metadata_db: str, logs: Path,
                  interval_s: int, seconds: float, rate: int, seed: int, drain_extra_s: float,
                  stop: threading.Event, counter: list) -> None:
    """Feed invoices for ``seconds``, then wait until all are accepted or held back, or the drain time ends."""
    _wait_registered(server.target(metadata_db), "invoice_delivery", logs)
    arrivals = threading.Thread(target=_arrivals, args=(target, rate, seconds, stop, counter, seed),
                                name="arrivals", daemon=True)
    arrival_started = time.monotonic()
    arrivals.start()
    arrivals.join()
    counter[1] = time.monotonic() - arrival_started
    deadline = time.monotonic() + interval_s + drain_extra_s
    while time.monotonic() < deadline:
        invoices, accepted, held = _progress(target)
        if accepted + held >= invoices:
            return
        time.sleep(5)


def measure(server: EmbeddedPostgres, base_env: dict[str, str], logs: Path, *, interval_s: int,
            seconds: float, rate: int, metadata_template: str, drain_extra_s: float = 300,
            seed: int = 1000) -> LatencyResult:
    """Run one latency measurement at a schedule of ``interval_s`` seconds; see the module docstring."""
    name = f"lat{interval_s}s"
    invoice_db, metadata_db = f"invoices_{name}", f"airflow_{name}"
    server.ensure_database(invoice_db)
    with psycopg.connect(server.target("postgres").conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{metadata_db}" TEMPLATE "{metadata_template}"')
    target = server.target(invoice_db)
    migrate.apply_migrations(target)
    home = logs / name / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_run.airflow_environment(
        {**base_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder(logs / name / "dags", interval_s))},
        server, target, home, metadata_db)
    stop = threading.Event()
    counter = [0, 0.0]  # invoices inserted, seconds the arrivals took
    with airflow_run.api_server(env, logs / name / "api-server.log"):
        processes = _start_components(env, logs / name)
        try:
            _run_arrivals(server, target, metadata_db, logs / name, interval_s, seconds, rate, seed, drain_extra_s,
                          stop, counter)
        finally:
            stop.set()
            _stop_components(processes)

    arrival_s = counter[1]
    invoices, accepted, held = _progress(target)
    with psycopg.connect(target.conninfo()) as conn:
        samples = [float(row[0]) for row in conn.execute(
            "SELECT extract(epoch FROM min(d.accepted_at) - i.ready_at) FROM billing.invoice i"
            " JOIN delivery.delivery d USING (invoice_id) WHERE d.accepted_at IS NOT NULL"
            " GROUP BY i.invoice_id, i.ready_at ORDER BY 1")]
    with psycopg.connect(server.target(metadata_db).conninfo()) as meta:
        runs = [{"run_id": r[0], "run_type": r[1], "start": r[2], "end": r[3], "state": r[4]} for r in meta.execute(
            "SELECT run_id, run_type, start_date, end_date, state FROM dag_run WHERE dag_id = 'invoice_delivery'"
            " ORDER BY start_date")]
    return LatencyResult(
        interval_s=interval_s, arrival_s=arrival_s, arrived=invoices, accepted=accepted, held_back=held,
        pending=invoices - accepted - held, p50_s=percentile(samples, 50), p95_s=percentile(samples, 95),
        p99_s=percentile(samples, 99), max_s=samples[-1] if samples else None, samples=samples, runs=runs,
        arrival_rate=counter[0] / arrival_s if arrival_s else 0.0,
    )


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Return the q-th percentile of an ascending list by linear interpolation, or None when empty."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def main(argv: list[str] | None = None) -> int:
    """Run only the latency measurements: ``python -m benchmarks.latency --seconds 120 --schedules 1``."""
    import argparse
    import json
    import os
    import sys

    from benchmarks import plots
    from benchmarks.common import configure_logging, exit_on_sigterm, free_port, machine_summary, temporary_postgres
    from invoice_delivery import devenv
    from invoice_delivery.simulator.process import SimulatorProcess

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="seconds of arrivals per schedule (default 600)")
    parser.add_argument("--schedules", default="5,1",
                        help="schedule intervals: minutes (5 or 5m) or seconds (30s), comma-separated (default 5,1)")
    parser.add_argument("--rate", type=int, default=100, help="arriving invoices per second (default 100)")
    parser.add_argument("--channels", default="sms,push", help="INVOICE_DELIVERY_CHANNELS (default sms,push)")
    parser.add_argument("--plots-dir", type=Path, default=None, help="write the latency plot here")
    parser.add_argument("--log-dir", type=Path, default=None, help="log folder (default .data/bench/latency-<time>)")
    args = parser.parse_args(argv)
    try:
        schedules = parse_schedules(args.schedules)
    except ValueError as exc:
        parser.error(str(exc))
    exit_on_sigterm()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    logs = (args.log_dir or settings.data_dir() / "bench" / f"latency-{stamp}").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    configure_logging(logs / "bench.log")
    print(f"machine: {machine_summary()}; logs in {logs}", flush=True)
    results = {}
    with temporary_postgres("invoice-bench-latency-") as (server, target, _folder):
        sim_port, smtp_port = free_port(), free_port()
        with SimulatorProcess(sim_port, smtp_port=smtp_port):
            base = {**os.environ, **devenv.gateway_connections(sim_port, smtp_port=smtp_port),
                    "INVOICE_DELIVERY_CHANNELS": args.channels, "INVOICE_DELIVERY_QUIET_HOURS": "off"}
            server.ensure_database("airflow")
            env = airflow_run.airflow_environment(base, server, target, logs / "airflow", "airflow")
            devenv.run_airflow(["db", "migrate"], env, log_file=logs / "airflow-db-migrate.log")
            for interval in schedules:
                print(f"latency at a {schedule_name(interval)} schedule: {args.seconds:.0f}s of arrivals ...",
                      flush=True)
                result = measure(server, base, logs, interval_s=interval, seconds=args.seconds, rate=args.rate,
                                 metadata_template="airflow")
                results[str(interval)] = result
                print(describe(result), flush=True)
    (logs / "latency.json").write_text(json.dumps({k: v.__dict__ for k, v in results.items()}, default=str))
    plots_dir = (args.plots_dir or logs).resolve()
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots.latency_cdf(plots_dir / "benchmark-latency.png",
                      {f"{schedule_name(int(m))} schedule": r.samples for m, r in results.items()},
                      f"Ready to accepted, {args.rate} invoices/s arriving, channels {args.channels}")
    sys.stdout.flush()
    return 0


def describe(result: LatencyResult) -> str:
    """Return one paragraph with the counts, the percentiles and each DAG run's duration."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    lines = [f"latency at a {schedule_name(result.interval_s)} schedule: {result.arrived} arrived "
             f"({result.arrival_rate:.1f}/s over {result.arrival_s:.0f}s), {result.accepted} accepted, "
             f"{result.held_back} held back, "
             f"{result.pending} pending; p50 {seconds(result.p50_s)}, p95 {seconds(result.p95_s)}, "
             f"p99 {seconds(result.p99_s)}, max {seconds(result.max_s)}; {len(result.runs)} DAG runs"]
    for run in result.runs:
        duration = (run["end"] - run["start"]).total_seconds() if run["start"] and run["end"] else None
        lines.append(f"  run {run['run_id']} ({run['run_type']}): {run['state']}, "
                     f"{'-' if duration is None else f'{duration:.0f}s'}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
