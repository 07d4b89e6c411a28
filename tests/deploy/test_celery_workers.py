"""Run invoice_delivery on CeleryExecutor with two workers, the process topology of docker-compose.yaml.

Processes started here: ``airflow dag-processor``, ``airflow scheduler``, ``airflow api-server`` on a
free loopback port and two ``airflow celery worker`` processes with concurrency 2 each. The broker
is the machine's Redis on 127.0.0.1:6379. Airflow's metadata and the Celery result backend share
one database on the session's embedded PostgreSQL. The run is triggered through the REST API.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from invoice_delivery import devenv, settings
from invoice_delivery.ingest.generator import generate
from invoice_delivery.simulator.config import CHANNELS
from invoice_delivery.simulator.process import SimulatorProcess
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
# Redis database for this test's broker. Each run also uses a queue of its own (see celery_queue).
REDIS_DB = 11
WORKERS = ("invoice-worker-a", "invoice-worker-b")
WORKER_CONCURRENCY = 2
INVOICES = 60
BATCH_SIZE = 10  # 60 invoices in batches of 10: six validate and six route/render/send instances
# The mailbox connection's rate limit for this run. Send tasks on both workers draw from one budget
# in delivery.rate_limit, so the simulator receives at most about this many mailbox messages a second.
MAILBOX_RATE_PER_S = 2
STARTUP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 420
STOP_TIMEOUT_S = 30
LOG_TAIL_LINES = 40

# Module imported by each worker's task processes through [core] hostname_callable, so the
# task_instance.hostname column names the worker that ran the task, although both workers run on
# this one machine.
HOSTNAME_MODULE = '''
import os


def worker_hostname() -> str:
    return os.environ["DEPLOY_TEST_WORKER_HOSTNAME"]
'''


def _redis_answers_ping() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Component:
    """One Airflow process in its own session, its output in ``log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        airflow = shutil.which("airflow", path=env["PATH"])
        if airflow is None:
            raise RuntimeError(f"airflow not found on PATH {env['PATH']!r}; install the requirements into .venv")
        with log.open("w") as out:
            self.process = subprocess.Popen([airflow, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def check_running(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with status {code}; last lines of {self.log}:\n{_tail(self.log)}")

    def stop(self) -> None:
        """Send SIGTERM to the process group, then SIGKILL after STOP_TIMEOUT_S."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class Cluster:
    """The running components: Airflow services first, then the Celery workers in WORKERS order."""

    api_url: str
    components: list[Component]

    @property
    def workers(self) -> list[Component]:
        return [c for c in self.components if c.name in WORKERS]


def _wait_for(description: str, condition, components: list[Component], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for component in components:
            component.check_running()
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {c.name} ({c.log}):\n{_tail(c.log)}" for c in components)
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {description}\n{logs}")
        time.sleep(1)


@pytest.fixture
def redis_broker() -> str:
    if not _redis_answers_ping():
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}; the CeleryExecutor test needs it as broker")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


@pytest.fixture
def celery_queue(redis_broker) -> Iterator[str]:
    """Return a Celery queue of this test's own, so another run on the same Redis database takes none of its tasks.

    Removes the queue and kombu's binding set for it from Redis afterwards.
    """
    import redis

    name = f"deploy-test-{os.getpid()}-{secrets.token_hex(3)}"
    yield name
    client = redis.Redis.from_url(redis_broker)
    try:
        client.delete(name, f"_kombu.binding.{name}")
    finally:
        client.close()


@pytest.fixture
def celery_metadata(postgres) -> settings.PostgresTarget:
    """Return a new database for Airflow's metadata and the Celery result backend."""
    name = f"airflow_celery_{os.getpid()}_{secrets.token_hex(3)}"
    postgres.ensure_database(name)
    return postgres.target(name)


@pytest.fixture
def simulator() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(free_port()) as process:
        yield process


@pytest.fixture
def celery_env(redis_broker, celery_queue, celery_metadata, invoice_db, simulator, tmp_path) -> dict[str, str]:
    """Return the environment shared by every component, as docker-compose.yaml sets it."""
    home = tmp_path / "airflow"
    home.mkdir()
    api_port = free_port()
    passwords = tmp_path / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(16)}))
    base = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": celery_metadata.sqlalchemy_url(),
        "AIRFLOW__CELERY__BROKER_URL": redis_broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + celery_metadata.conninfo(),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": celery_queue,
        # No scheduled runs: invoice_delivery runs only when this test triggers it, delivery_reconciliation never.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW_CONN_INVOICE_DB": invoice_db.airflow_uri(),
        "INVOICE_DELIVERY_SIM_PORT": str(simulator.port),
        **devenv.gateway_connections(simulator.port, smtp_port=simulator.smtp_port,
                                     extra_overrides={"mailbox": {"rate_limit_per_s": MAILBOX_RATE_PER_S}}),
    }
    return devenv.airflow_env(base)


def _worker_env(env: dict[str, str], hostname: str, tmp_path: Path) -> dict[str, str]:
    module_dir = tmp_path / "worker-hostname"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "deploy_test_worker_hostname.py").write_text(textwrap.dedent(HOSTNAME_MODULE).lstrip())
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(p for p in (str(module_dir), env.get("PYTHONPATH")) if p),
        "DEPLOY_TEST_WORKER_HOSTNAME": hostname,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "deploy_test_worker_hostname.worker_hostname",
    }


@pytest.fixture
def celery_cluster(celery_env, celery_metadata, tmp_path) -> Iterator[Cluster]:
    """Start the dag-processor, scheduler, api-server and two Celery workers, and stop them afterwards."""
    devenv.run_airflow(["db", "migrate"], celery_env, log_file=tmp_path / "db-migrate.log")
    components: list[Component] = []
    try:
        components.append(Component("dag-processor", ["dag-processor"], celery_env, tmp_path / "dag-processor.log"))
        components.append(Component("scheduler", ["scheduler"], celery_env, tmp_path / "scheduler.log"))
        components.append(Component("api-server", ["api-server"], celery_env, tmp_path / "api-server.log"))
        for hostname in WORKERS:
            components.append(Component(
                hostname,
                ["celery", "worker", "--celery-hostname", hostname, "--concurrency", str(WORKER_CONCURRENCY),
                 "--pid", str(tmp_path / f"{hostname}.pid"),
                 # The log server would listen on every interface, and the api-server reads the log folder anyway.
                 "--skip-serve-logs"],
                _worker_env(celery_env, hostname, tmp_path),
                tmp_path / f"{hostname}.log",
            ))

        cluster = Cluster(f"http://127.0.0.1:{celery_env['AIRFLOW__API__PORT']}", components)

        def api_server_up() -> bool:
            try:
                return httpx.get(f"{cluster.api_url}/api/v2/version", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        def dag_registered() -> bool:
            with psycopg.connect(celery_metadata.conninfo()) as meta:
                row = meta.execute("SELECT count(*) FROM dag WHERE dag_id = 'invoice_delivery'").fetchone()
            return row[0] > 0

        def workers_ready() -> bool:
            return all(f"{worker.name} ready" in worker.log.read_text(errors="replace") for worker in cluster.workers)

        _wait_for("the api-server to respond", api_server_up, components, STARTUP_TIMEOUT_S)
        _wait_for("the dag-processor to register invoice_delivery", dag_registered, components, STARTUP_TIMEOUT_S)
        _wait_for("both Celery workers to report ready", workers_ready, components, STARTUP_TIMEOUT_S)
        yield cluster
    finally:
        for component in reversed(components):
            component.stop()


def _api_token(api_url: str, env: dict[str, str]) -> str:
    password = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())["admin"]
    response = httpx.post(f"{api_url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    assert response.status_code == 201, f"POST /auth/token failed: {response.status_code} {response.text}"
    return response.json()["access_token"]


def _max_in_one_second(timestamps: list[float]) -> int:
    """Return the largest number of timestamps inside any one-second window."""
    ordered = sorted(timestamps)
    largest, first = 0, 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= 1.0:
            first += 1
        largest = max(largest, last - first + 1)
    return largest


def _task_instances(metadata: settings.PostgresTarget, run_id: str) -> list[dict]:
    with psycopg.connect(metadata.conninfo(), row_factory=dict_row) as meta:
        return meta.execute(
            "SELECT task_id, map_index, state, hostname, start_date, end_date FROM task_instance"
            " WHERE dag_id = 'invoice_delivery' AND run_id = %s ORDER BY task_id, map_index",
            (run_id,),
        ).fetchall()


def test_celery_workers_share_one_run(conn, celery_env, celery_metadata, celery_cluster, simulator):
    started = time.monotonic()
    now = datetime.now(UTC)
    generate(conn, INVOICES, seed=7, ready_from=now - timedelta(minutes=4), ready_until=now - timedelta(seconds=1))
    conn.commit()
    httpx.post(f"{simulator.url}/_sim/reset").raise_for_status()

    headers = {"Authorization": f"Bearer {_api_token(celery_cluster.api_url, celery_env)}"}
    with httpx.Client(base_url=celery_cluster.api_url, headers=headers, timeout=30) as api:
        response = api.post("/api/v2/dags/invoice_delivery/dagRuns",
                            json={"logical_date": None, "conf": {"batch_size": BATCH_SIZE}})
        assert response.status_code == 200, f"triggering the run failed: {response.status_code} {response.text}"
        run_id = response.json()["dag_run_id"]
        response = api.patch("/api/v2/dags/invoice_delivery", json={"is_paused": False})
        assert response.status_code == 200, f"unpausing invoice_delivery failed: {response.status_code} {response.text}"

        state = {"value": None}

        def run_finished() -> bool:
            reply = api.get(f"/api/v2/dags/invoice_delivery/dagRuns/{run_id}")
            reply.raise_for_status()
            state["value"] = reply.json()["state"]
            return state["value"] in ("success", "failed")

        _wait_for(f"run {run_id} to finish", run_finished, celery_cluster.components, RUN_TIMEOUT_S)
        api.patch("/api/v2/dags/invoice_delivery", json={"is_paused": True})
    print(f"run {run_id} took {time.monotonic() - started:.0f} s from generating invoices to its end")

    instances = _task_instances(celery_metadata, run_id)
    summary = "\n".join(f"{ti['task_id']}[{ti['map_index']}] {ti['state']} on {ti['hostname']}" for ti in instances)
    assert state["value"] == "success", f"run {run_id} ended {state['value']}; task instances:\n{summary}"
    assert all(ti["state"] == "success" for ti in instances), summary

    batches = math.ceil(INVOICES / BATCH_SIZE)
    sends = [ti for ti in instances if ti["task_id"] == "process.send"]
    assert len(sends) == batches, f"expected {batches} mapped send instances, one per batch:\n{summary}"
    assert {ti["hostname"] for ti in instances} == set(WORKERS), f"both workers must run task instances:\n{summary}"
    for worker in celery_cluster.workers:
        worker_log = worker.log.read_text(errors="replace")
        assert "execute_workload[" in worker_log, f"Celery worker {worker.name} received no workload; see {worker.log}"
        assert "] succeeded in" in worker_log, f"Celery worker {worker.name} finished no workload; see {worker.log}"

    documents = conn.execute(
        "SELECT doc.invoice_id, doc.status, doc.reason, latest.state AS latest_state,"
        " latest.not_before > now() AS held_back"
        " FROM delivery.document doc LEFT JOIN LATERAL (SELECT d.state, d.not_before FROM delivery.delivery d"
        "  WHERE d.invoice_id = doc.invoice_id ORDER BY d.attempt DESC LIMIT 1) latest ON true"
    ).fetchall()
    assert len(documents) == INVOICES
    for doc in documents:
        if doc["status"] in ("quarantined", "unroutable"):
            assert doc["reason"], f"invoice {doc['invoice_id']} is {doc['status']} without a reason"
        elif doc["latest_state"] == "rendered":
            # SMS and push wait out the recipient's quiet hours (21:00 to 08:00 local time).
            assert doc["held_back"], f"invoice {doc['invoice_id']} was rendered but not sent: {doc}"
        else:
            assert doc["latest_state"] in ("accepted", "delivered"), doc
    accepted = {doc["invoice_id"] for doc in documents if doc["latest_state"] in ("accepted", "delivered")}
    assert accepted, "no invoice was accepted by a gateway"

    stats = httpx.get(f"{simulator.url}/_sim/stats").json()
    messages = {channel: httpx.get(f"{simulator.url}/_sim/messages", params={"channel": channel}).json()
                for channel in CHANNELS}
    total = sum(len(channel_messages) for channel_messages in messages.values())
    assert total == len(accepted), "the simulator must hold exactly one message per accepted delivery"
    duplicates = {channel: counters.get("duplicates_offered", 0)
                  for channel, counters in stats.items() if isinstance(counters, dict)}
    assert sum(duplicates.values()) == 0, f"gateways were offered duplicates: {duplicates}"

    mailbox_times = [message["received_at"] for message in messages["mailbox"]]
    assert len(mailbox_times) > MAILBOX_RATE_PER_S, "too few mailbox messages to test the shared rate limit"
    # With messages exactly 1/rate apart, a one-second window contains rate messages, or rate + 1 when the
    # first arrived a little late. Two send tasks with limits of their own would exceed that.
    peak = _max_in_one_second(mailbox_times)
    assert peak <= MAILBOX_RATE_PER_S + 1, f"{peak} mailbox messages in one second; the limit is {MAILBOX_RATE_PER_S}/s"
    overlapping = any(a["hostname"] != b["hostname"] and a["start_date"] < b["end_date"]
                      and b["start_date"] < a["end_date"] for a in sends for b in sends)
    print(f"mailbox: {len(mailbox_times)} messages, at most {peak} in one second; "
          f"send tasks on different workers overlapped: {overlapping}")
