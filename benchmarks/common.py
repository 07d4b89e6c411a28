"""Helpers shared by the benchmarks: a throw-away PostgreSQL, gateway clients, send workers, reports.

Everything listens on 127.0.0.1 and lives in a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg

from invoice_delivery import migrate, settings
from invoice_delivery.channels import CONN_IDS, GatewayConfig
from invoice_delivery.embedded import EmbeddedPostgres

log = logging.getLogger("benchmarks")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FINAL_STATUSES = ("delivered", "failed", "cancelled", "quarantined", "unroutable")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``with`` blocks stop PostgreSQL, the simulator and Airflow.

    Without it a terminated benchmark left its servers running.
    """

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_logging(log_file: Path) -> None:
    """Send every library's log records to ``log_file`` and the benchmark's own progress to stderr too."""
    logging.basicConfig(filename=log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(console)
    log.setLevel(logging.INFO)


def machine_summary() -> str:
    """Return cores, memory and CPU model of this machine, and its load average at the call."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} cores, {memory_gib:.1f} GiB, CPU {model}; load average {load}"


@contextmanager
def temporary_postgres(prefix: str) -> Iterator[tuple[EmbeddedPostgres, settings.PostgresTarget, Path]]:
    """Start an embedded PostgreSQL in a new temporary folder with a migrated ``invoices`` database.

    Yields the server, the invoice database's target and the folder, which is removed on exit.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(folder, free_port())
    try:
        server.start()
        server.ensure_database(settings.INVOICE_DB_NAME)
        target = server.target(settings.INVOICE_DB_NAME)
        migrate.apply_migrations(target)
        yield server, target, folder
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def gateway_config(conn_id: str, raw: str) -> GatewayConfig:
    """Build a GatewayConfig from an ``AIRFLOW_CONN_*`` value in JSON form, without Airflow."""
    fields = json.loads(raw)
    extra = fields.get("extra") or {}
    connection = SimpleNamespace(
        conn_id=conn_id,
        host=fields.get("host"),
        port=fields.get("port"),
        schema=fields.get("schema"),
        login=fields.get("login"),
        password=fields.get("password"),
        extra_dejson=json.loads(extra) if isinstance(extra, str) else dict(extra),
    )
    return GatewayConfig.from_connection(connection)


def build_clients(channels: tuple[str, ...] | list[str], target: settings.PostgresTarget,
                  environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Build each channel's client from ``AIRFLOW_CONN_<CHANNEL>_GATEWAY`` as ``tasks.client_for`` does.

    A gateway with ``rate_limit_per_s`` gets the limiter shared through PostgreSQL, as in the DAG.
    """
    import importlib

    from invoice_delivery.channels.ratelimit import SharedRateLimiter
    from invoice_delivery.tasks import _CLIENT_CLASSES

    environ = os.environ if environ is None else environ
    clients = {}
    for channel in channels:
        conn_id = CONN_IDS[channel]
        raw = environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
        if not raw:
            raise KeyError(f"AIRFLOW_CONN_{conn_id.upper()} is not set; the benchmark sets it for every channel")
        config = gateway_config(conn_id, raw)
        module_name, class_name = _CLIENT_CLASSES[channel].split(":")
        client = getattr(importlib.import_module(module_name), class_name)(config)
        if config.rate_limit_per_s > 0:
            client.limiter = SharedRateLimiter(target, conn_id, config.rate_limit_per_s)
        clients[channel] = client
    return clients


def simulator_stats(url: str) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.get(f"{url}/_sim/stats")
        response.raise_for_status()
        return response.json()


def duplicates_offered(stats: dict[str, Any]) -> int:
    return sum(int(channel["duplicates_offered"]) for channel in stats.values())


@dataclass
class FinalReport:
    """Document status counts, invoices delivered per channel, and the invoices in no final state."""

    by_status: Counter[str]
    delivered_by_channel: Counter[str]
    lost: int
    lost_examples: list[tuple[int, str | None]]


def final_report(conn: psycopg.Connection) -> FinalReport:
    """Count invoices by document status; an invoice is lost unless it is final with a reason where one is due.

    Final means delivered; failed, cancelled or unroutable with a reason; or quarantined with a row
    in ``delivery.quarantine``. An invoice with no document row at all is lost too.
    """
    rows = conn.execute(
        "SELECT coalesce(d.status, 'not extracted') AS status, count(*) AS n FROM billing.invoice i"
        " LEFT JOIN delivery.document d USING (invoice_id) GROUP BY 1"
    ).fetchall()
    by_status = Counter({row["status"]: row["n"] for row in rows})
    delivered = conn.execute(
        "SELECT d.channel, count(*) AS n FROM delivery.delivery d WHERE d.state = 'delivered' GROUP BY 1"
    ).fetchall()
    lost_rows = conn.execute(
        "SELECT i.invoice_id, d.status FROM billing.invoice i LEFT JOIN delivery.document d USING (invoice_id)"
        " WHERE d.invoice_id IS NULL"
        "    OR d.status <> ALL(%s)"
        "    OR (d.status IN ('failed', 'cancelled', 'unroutable') AND d.reason IS NULL)"
        "    OR (d.status = 'quarantined' AND NOT EXISTS"
        "        (SELECT 1 FROM delivery.quarantine q WHERE q.invoice_id = i.invoice_id))"
        " ORDER BY i.invoice_id",
        (list(FINAL_STATUSES),),
    ).fetchall()
    return FinalReport(by_status, Counter({row["channel"]: row["n"] for row in delivered}), len(lost_rows),
                       [(row["invoice_id"], row["status"]) for row in lost_rows[:10]])


def open_work(conn: psycopg.Connection) -> Counter[str]:
    """Count deliveries in the states the send stage still has to move: planned, rendered, sending."""
    rows = conn.execute(
        "SELECT state, count(*) AS n FROM delivery.delivery WHERE state IN ('planned', 'rendered', 'sending')"
        " GROUP BY state"
    ).fetchall()
    return Counter({row["state"]: row["n"] for row in rows})


# ---------------------------------------------------------------------------------------------
# Send workers: one process per batch try, retried like Airflow retries a failed task
# ---------------------------------------------------------------------------------------------


@dataclass
class KillPlan:
    """SIGKILL the first try of ``batch_id`` ``delay_s`` after its rows show up as ``sending``."""

    batch_id: int
    delay_s: float
    killed_at: float | None = None
    left_sending: int | None = None


@dataclass
class SendRound:
    """Counts of one :meth:`SendScheduler.run` call: tries, retries, exit codes, messages, batches given up."""

    tries: int = 0
    retries: int = 0
    failures: Counter[int] = field(default_factory=Counter)
    exit_codes: Counter[int] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    gave_up: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass
class _Running:
    batch_id: int
    try_number: int
    process: subprocess.Popen
    started: float
    log_file: Path
    output: Path


class SendScheduler:
    """Run ``benchmarks.send_worker`` for each batch, ``parallelism`` at a time, retrying failed tries.

    A try that exits non-zero (unresolved messages, an error, or a SIGKILL) is tried again after
    ``min(max_delay_s, base_delay_s * 2 ** (try - 1))``, as Airflow's exponential retry delay does,
    until ``deadline`` (a ``time.monotonic()`` value) passes.
    """

    def __init__(self, env: dict[str, str], target: settings.PostgresTarget, logs: Path, *, run_id: str,
                 parallelism: int = 2, base_delay_s: float = 1.0, max_delay_s: float = 10.0,
                 dag_id: str = "bench_faults") -> None:
        self.env = env
        self.target = target
        self.logs = logs
        self.run_id = run_id
        self.dag_id = dag_id
        self.parallelism = parallelism
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.worker_logs: dict[tuple[int, int], Path] = {}

    def _start(self, batch_id: int, try_number: int) -> _Running:
        log_file = self.logs / f"send-{self.run_id}-batch{batch_id}-try{try_number}.log"
        output = log_file.with_suffix(".out")
        command = [sys.executable, "-m", "benchmarks.send_worker", "--batch", str(batch_id),
                   "--run-id", self.run_id, "--dag-id", self.dag_id, "--try", str(try_number)]
        with log_file.open("wb") as err, output.open("wb") as out:
            process = subprocess.Popen(command, env=self.env, cwd=PROJECT_ROOT, stdout=out, stderr=err)
        self.worker_logs[(batch_id, try_number)] = log_file
        return _Running(batch_id, try_number, process, time.monotonic(), log_file, output)

    def _sending_rows(self, conn: psycopg.Connection, batch_id: int) -> int:
        return conn.execute(
            "SELECT count(*) FROM delivery.delivery d JOIN delivery.batch_item bi USING (invoice_id)"
            " WHERE bi.batch_id = %s AND d.state = 'sending'",
            (batch_id,),
        ).fetchone()[0]

    def run(self, batch_ids: list[int], deadline: float, kill: KillPlan | None = None) -> SendRound:
        """Send every batch, retrying failed tries, until all succeed or the deadline passes."""
        started = time.monotonic()
        result = SendRound()
        waiting: deque[tuple[int, int, float]] = deque((batch_id, 1, 0.0) for batch_id in batch_ids)
        running: list[_Running] = []
        seen_sending_at: float | None = None
        with psycopg.connect(self.target.conninfo(), autocommit=True) as conn:
            while waiting or running:
                now = time.monotonic()
                if now > deadline:
                    for item in running:
                        item.process.kill()
                        item.process.wait()
                        result.gave_up.append(item.batch_id)
                    result.gave_up.extend(batch_id for batch_id, _, _ in waiting)
                    log.error("Send deadline passed; batches left unsent: %s", sorted(result.gave_up))
                    break

                for _ in range(len(waiting)):
                    if len(running) >= self.parallelism:
                        break
                    batch_id, try_number, not_before = waiting.popleft()
                    if not_before > now:
                        waiting.append((batch_id, try_number, not_before))
                        continue
                    running.append(self._start(batch_id, try_number))
                    result.tries += 1
                    result.retries += try_number > 1

                if kill and kill.killed_at is None:
                    victim = next((r for r in running if r.batch_id == kill.batch_id and r.try_number == 1), None)
                    if victim and victim.process.poll() is None:
                        if seen_sending_at is None and self._sending_rows(conn, kill.batch_id) > 0:
                            seen_sending_at = time.monotonic()
                        if seen_sending_at is not None and time.monotonic() - seen_sending_at >= kill.delay_s:
                            victim.process.send_signal(signal.SIGKILL)
                            victim.process.wait()
                            kill.killed_at = time.monotonic()
                            kill.left_sending = self._sending_rows(conn, kill.batch_id)
                            log.info("SIGKILLed the worker of batch %s %.2fs after its claim; %d rows left in sending",
                                     kill.batch_id, kill.killed_at - seen_sending_at, kill.left_sending)

                still_running = []
                for item in running:
                    code = item.process.poll()
                    if code is None:
                        still_running.append(item)
                        continue
                    result.exit_codes[code] += 1
                    if code == 0:
                        lines = item.output.read_text().strip().splitlines()
                        counts = json.loads(lines[-1]) if lines else {}
                        for key in ("accepted", "rejected"):
                            result.counts[key] += int(counts.get(key, 0))
                        continue
                    result.failures[item.batch_id] += 1
                    delay = min(self.max_delay_s, self.base_delay_s * 2 ** (item.try_number - 1))
                    log.info("Batch %s try %d exited with %d; retrying in %.0fs (worker log %s)",
                             item.batch_id, item.try_number, code, delay, item.log_file)
                    waiting.append((item.batch_id, item.try_number + 1, time.monotonic() + delay))
                running = still_running
                time.sleep(0.02 if kill and kill.killed_at is None else 0.1)
        result.elapsed_s = time.monotonic() - started
        return result
