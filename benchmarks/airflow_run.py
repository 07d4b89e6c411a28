"""Run ``invoice_delivery`` through Airflow for the scale benchmark and read its figures back.

Airflow's metadata database is a database on the benchmark's temporary PostgreSQL; its home (and
so the task logs) is in the benchmark's log folder, which is kept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from benchmarks.common import free_port
from invoice_delivery import devenv, settings
from invoice_delivery.embedded import EmbeddedPostgres

# Task ids of invoice_delivery, in lifecycle order, and the stage each one is.
STAGE_TASKS = {
    "extract": "extract",
    "validate": "validate",
    "quality_gate": "quality_gate",
    "process.route": "route",
    "process.render": "render",
    "process.send": "send",
}


def airflow_environment(base: dict[str, str], server: EmbeddedPostgres, invoice_db: settings.PostgresTarget,
                        home: Path, metadata_db: str) -> dict[str, str]:
    """Return the environment for Airflow commands against the given metadata and invoice databases.

    Task processes started by an executor reach the metadata through the api-server's execution
    API, so the environment names a loopback api-server (see :func:`api_server`) and one JWT
    secret for every component.
    """
    home.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    return devenv.airflow_env({
        **base,
        "AIRFLOW_HOME": str(home),
        "INVOICE_DELIVERY_DATA": str(home.parent),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": server.target(metadata_db).sqlalchemy_url(),
        "AIRFLOW_CONN_INVOICE_DB": invoice_db.airflow_uri(),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
    })


@contextmanager
def api_server(env: dict[str, str], log_file: Path, timeout_s: float = 180) -> Iterator[str]:
    """Run ``airflow api-server`` on the environment's loopback port until the block ends; yield its URL."""
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    with log_file.open("w") as out:
        process = subprocess.Popen([airflow, "api-server"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(trust_env=False, timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the api-server exited with {process.returncode}; see {log_file}")
                try:
                    if client.get(f"{url}/api/v2/version").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the api-server did not respond on {url} in {timeout_s:.0f}s; see {log_file}")
                time.sleep(1)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class RssSampler(threading.Thread):
    """Sample the resident memory of a process and all its descendants; keep each process's peak."""

    # Walking every process of the run five times a second cost about 4 % of a core at N=1,000,000;
    # every task process of these runs lived for seconds, so twice a second samples each several times.
    def __init__(self, root_pid: int, interval_s: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peaks: dict[int, tuple[int, str]] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    if rss > self.peaks.get(process.pid, (0, ""))[0]:
                        title = " ".join(process.cmdline())[:160] or process.name()
                        self.peaks[process.pid] = (rss, title)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def name_tasks(self, names: dict[str, str]) -> None:
        """Append the task name to each worker title that carries a task instance id (``airflow worker -- ID``)."""
        for pid, (rss, title) in self.peaks.items():
            ti_id = title.rsplit(" -- ", 1)[-1].strip()
            if ti_id in names:
                self.peaks[pid] = (rss, f"{title.strip()} ({names[ti_id]})")

    def largest(self, exclude_root: bool) -> tuple[float, str]:
        """Return (peak MiB, process title) of the largest process, without the root if asked."""
        candidates = [(rss, title) for pid, (rss, title) in self.peaks.items()
                      if not (exclude_root and pid == self.root_pid)]
        if not candidates:
            return 0.0, "no process sampled"
        rss, title = max(candidates)
        return rss / 2**20, title


@dataclass
class DagRunFigures:
    """One ``airflow dags test`` run: command wall time, stage windows from the metadata DB, memory."""

    command_wall_s: float
    run_wall_s: float
    stages: dict[str, dict[str, Any]]
    states: dict[str, int]
    peak_task_rss_mb: float
    peak_task_title: str
    peak_root_rss_mb: float
    processes: list[tuple[float, str]] = field(default_factory=list)


def run_dag_test(env: dict[str, str], dag_id: str, conf: dict[str, Any], *, use_executor: bool,
                 log_file: Path, metadata: settings.PostgresTarget, timeout_s: float) -> DagRunFigures:
    """Run ``airflow dags test`` once, sampling memory, and read each task's start and end afterwards."""
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    command = [airflow, "dags", "test", dag_id, "--conf", json.dumps(conf)]
    if use_executor:
        command.append("--use-executor")
    started = time.monotonic()
    with log_file.open("w") as out:
        # A session of its own, so that stopping the run also stops the executor's task processes.
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = RssSampler(process.pid)
        sampler.start()
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _stop_group(process)
            message = f"`airflow dags test {dag_id}` did not finish in {timeout_s:.0f}s; see {log_file}"
            raise RuntimeError(message) from exc
        except BaseException:
            _stop_group(process)
            raise
        finally:
            sampler.stop()
    command_wall = time.monotonic() - started
    if code != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"`airflow dags test {dag_id}` exited with {code}; last lines of {log_file}:\n{tail}")

    stages, states, run_wall = task_windows(metadata, dag_id)
    sampler.name_tasks(task_names(metadata, dag_id))
    # Without an executor every task runs inside the dags test process itself, so that is the task process.
    task_mb, task_title = sampler.largest(exclude_root=use_executor)
    root_mb = sampler.peaks.get(process.pid, (0, ""))[0] / 2**20
    top = sorted(((rss / 2**20, title) for rss, title in sampler.peaks.values()), reverse=True)[:8]
    return DagRunFigures(command_wall, run_wall, stages, states, task_mb, task_title, root_mb, top)


def _stop_group(process: subprocess.Popen) -> None:
    """Terminate the process and its session (the executor's workers); kill what is left after 10 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def task_names(metadata: settings.PostgresTarget, dag_id: str) -> dict[str, str]:
    """Return ``{task instance id: "task_id[map_index]"}`` of the latest run, to name worker processes."""
    with psycopg.connect(metadata.conninfo()) as meta:
        rows = meta.execute(
            "SELECT ti.id, ti.task_id, ti.map_index FROM task_instance ti"
            " WHERE ti.dag_id = %s AND ti.run_id = (SELECT run_id FROM dag_run WHERE dag_id = %s"
            " ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        ).fetchall()
    return {str(ti_id): task_id if map_index < 0 else f"{task_id}[{map_index}]" for ti_id, task_id, map_index in rows}


def task_windows(metadata: settings.PostgresTarget,
                 dag_id: str) -> tuple[dict[str, dict[str, Any]], dict[str, int], float]:
    """Return the latest run's stages, task states and wall time (first task start to last task end).

    Each stage has its first start, last end, number of instances and their summed durations.
    """
    with psycopg.connect(metadata.conninfo()) as meta:
        run_id = meta.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()[0]
        rows = meta.execute(
            "SELECT task_id, state, try_number, start_date, end_date FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        ).fetchall()
    stages: dict[str, dict[str, Any]] = {}
    states: dict[str, int] = {}
    for task_id, state, try_number, start, end in rows:
        states[str(state)] = states.get(str(state), 0) + 1
        stage = STAGE_TASKS.get(task_id, task_id)
        entry = stages.setdefault(stage, {"instances": 0, "start": None, "end": None, "busy_s": 0.0, "tries": 0})
        entry["instances"] += 1
        entry["tries"] = max(entry["tries"], int(try_number or 0))
        if start is not None and end is not None:
            entry["start"] = start if entry["start"] is None else min(entry["start"], start)
            entry["end"] = end if entry["end"] is None else max(entry["end"], end)
            entry["busy_s"] += (end - start).total_seconds()
    for entry in stages.values():
        entry["wall_s"] = (entry["end"] - entry["start"]).total_seconds() if entry["start"] else 0.0
    starts = [e["start"] for e in stages.values() if e["start"]]
    ends = [e["end"] for e in stages.values() if e["end"]]
    run_wall = (max(ends) - min(starts)).total_seconds() if starts else 0.0
    return stages, states, run_wall
