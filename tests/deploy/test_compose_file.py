"""Check docker-compose.yaml and the Dockerfile without Docker: settings, pinned images, scaling, layout.

Values are read as Docker Compose resolves them when no variable is set: ``${VAR:-default}`` becomes
its default and ``$$`` a literal ``$``.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
import yaml

from invoice_delivery import devenv, settings
from invoice_delivery.channels import ALL_CHANNELS, GatewayConfig
from invoice_delivery.reconcile.receiver import RECEIPT_CHANNELS
from invoice_delivery.simulator.config import SimulatorConfig

ROOT = settings.PROJECT_ROOT
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
)
LONG_RUNNING = tuple(name for name in AIRFLOW_SERVICES if name != "airflow-init") + (
    "postgres",
    "redis",
    "gateway-simulator",
)
SIMULATOR_HOST = "gateway-simulator"
SIMULATOR_PORT = 8025
SIMULATOR_SMTP_PORT = 8026
RECEIPTS_BASE = "http://airflow-apiserver:8080/invoice-delivery/receipts"
# Image references must name a version: a tag with digits, never "latest" and never no tag at all.
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:(?!latest$)[A-Za-z0-9._-]*\d[A-Za-z0-9._-]*$")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def _resolve(value):
    """Resolve a Compose value as if no variable were set: defaults in, ``$$`` to ``$``."""
    if not isinstance(value, str):
        return value
    text = value.replace("$$", "\0")
    text = _VARIABLE.sub(lambda match: match.group("default") or "", text)
    return text.replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    with (ROOT / "docker-compose.yaml").open() as file:
        return yaml.safe_load(file)


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """Return the Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _environment(compose: dict, service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: _resolve(str(value)) for key, value in env.items()}


def test_compose_file_has_every_service(compose):
    expected = {*AIRFLOW_SERVICES, "postgres", "redis", "gateway-simulator"}
    assert expected <= set(compose["services"])


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_service_settings(compose, service):
    env = _environment(compose, service)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"]).hostname == "postgres"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "every component needs the same JWT secret"
    assert env["AIRFLOW__API__SECRET_KEY"], "every component needs the same API secret key"
    assert env["AIRFLOW_CONN_INVOICE_DB"]
    for channel in ALL_CHANNELS:
        assert env[f"AIRFLOW_CONN_{channel.upper()}_GATEWAY"], f"{service} has no {channel} gateway connection"


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_service_runs_project_image(compose, service):
    definition = compose["services"][service]
    reference = compose["services"]["airflow-scheduler"]
    assert definition["image"] == reference["image"]
    assert definition["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert "/opt/airflow/logs" in " ".join(definition.get("volumes", []))


def test_no_packages_installed_at_start(compose):
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env, f"{name} installs packages at start; build the image instead"


def test_metadata_defaults_match_postgres_service(compose):
    postgres = _environment(compose, "postgres")
    env = _environment(compose, "airflow-scheduler")
    for variable in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        url = urlsplit(env[variable])
        assert url.username == postgres["POSTGRES_USER"], variable
        assert url.password == postgres["POSTGRES_PASSWORD"], variable
        assert url.path.lstrip("/") == postgres["POSTGRES_DB"], variable


def test_invoice_db_default_matches_init_script(compose):
    target = settings.parse_connection(_environment(compose, "airflow-scheduler")["AIRFLOW_CONN_INVOICE_DB"])
    init_sql = compose["configs"]["postgres-init-invoices"]["content"]
    assert target.host == "postgres"
    assert f"CREATE ROLE {target.user} LOGIN PASSWORD '{target.password}';" in init_sql
    assert f"CREATE DATABASE {target.database} OWNER {target.user};" in init_sql
    mounts = compose["services"]["postgres"]["configs"]
    assert {"source": "postgres-init-invoices", "target": "/docker-entrypoint-initdb.d/10-invoices.sql"} in mounts


@pytest.mark.parametrize("channel", ALL_CHANNELS)
def test_gateway_default_matches_simulator(compose, channel):
    """The default connection equals the project's simulator connection, with the simulator's service name."""
    from airflow.models.connection import Connection

    variable = f"AIRFLOW_CONN_{channel.upper()}_GATEWAY"
    expected = json.loads(devenv.gateway_connections(SIMULATOR_PORT, smtp_port=SIMULATOR_SMTP_PORT)[variable])
    actual = Connection(conn_id=f"{channel}_gateway", uri=_environment(compose, "airflow-worker")[variable])

    assert actual.conn_type == expected["conn_type"]
    assert actual.host == SIMULATOR_HOST
    assert actual.port == expected["port"]
    assert (actual.schema or None) == expected.get("schema")
    assert (actual.login or None) == expected.get("login")
    assert actual.password == expected.get("password")
    # Airflow returns query parameters as numbers or strings, and the channel clients convert either.
    expected_extra = {key: str(value).replace("127.0.0.1", SIMULATOR_HOST) for key, value in expected["extra"].items()}
    assert {key: str(value) for key, value in actual.extra_dejson.items()} == expected_extra
    assert GatewayConfig.from_connection(actual).rate_limit_per_s == expected["extra"]["rate_limit_per_s"]
    assert GatewayConfig.from_connection(actual).concurrency == expected["extra"]["concurrency"]


def test_simulator_config_sends_receipts_to_apiserver(compose):
    config = json.loads(compose["configs"]["gateway-simulator-config"]["content"])
    for channel in RECEIPT_CHANNELS:
        assert config[channel]["receipts"]["url"] == f"{RECEIPTS_BASE}/{channel}"
    # Every key must be a SimulatorConfig field. The loopback check of receipt URLs is not under test here.
    SimulatorConfig.model_validate(json.loads(json.dumps(config).replace("airflow-apiserver", "127.0.0.1")))


def test_simulator_service_listens_on_gateway_ports(compose):
    command = compose["services"]["gateway-simulator"]["command"]
    assert command[:3] == ["python", "-m", "invoice_delivery.simulator"]
    assert command[command.index("--port") + 1] == str(SIMULATOR_PORT)
    assert command[command.index("--smtp-port") + 1] == str(SIMULATOR_SMTP_PORT)
    assert command[command.index("--config") + 1] == "/opt/airflow/gateway-simulator.json"


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_service_has_healthcheck(compose, service):
    assert compose["services"][service]["healthcheck"]["test"]


@pytest.mark.parametrize("service", [name for name in AIRFLOW_SERVICES if name != "airflow-init"])
def test_airflow_service_waits_for_init(compose, service):
    depends_on = compose["services"][service]["depends_on"]
    assert depends_on["airflow-init"] == {"condition": "service_completed_successfully"}
    assert depends_on["postgres"] == {"condition": "service_healthy"}
    assert depends_on["redis"] == {"condition": "service_healthy"}


def test_init_migrates_both_databases(compose):
    script = compose["services"]["airflow-init"]["command"][-1]
    assert "airflow db migrate" in script
    assert "invoice-delivery migrate" in script
    assert script.index("airflow db migrate") < script.index("invoice-delivery migrate")


def test_worker_is_scalable(compose):
    worker = compose["services"]["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert "ports" not in worker


@pytest.mark.parametrize("service", ["postgres", "redis", "gateway-simulator", *AIRFLOW_SERVICES])
def test_image_version_pinned(compose, service):
    image = _resolve(compose["services"][service]["image"])
    assert PINNED_IMAGE.match(image), f"{service} image {image!r} is not pinned to a version"


def test_dockerfile_base_image_matches_requirements(dockerfile):
    base = [line for line in dockerfile if line.startswith("FROM ")]
    assert len(base) == 1
    image = base[0].split()[1]
    assert PINNED_IMAGE.match(image), image
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    airflow_pin = next(line for line in requirements if line.startswith("apache-airflow=="))
    version = airflow_pin.split("==")[1]
    assert image == f"apache/airflow:{version}-python3.11"


def test_dockerfile_installs_pinned_requirements(dockerfile):
    installs = [line for line in dockerfile if line.startswith("RUN ") and "pip install" in line]
    assert any("-r /opt/airflow/requirements/requirements.txt -c /opt/airflow/requirements/constraints.txt" in line
               for line in installs), installs
    assert any("--no-deps -e /opt/airflow" in line for line in installs), installs
    copies = [line for line in dockerfile if line.startswith("COPY ")]
    assert any("requirements.txt constraints.txt" in line for line in copies), copies


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        ("dags/", "/opt/airflow/dags/"),
        ("plugins/", "/opt/airflow/plugins/"),
        ("include/", "/opt/airflow/include/"),
        ("pyproject.toml", "/opt/airflow/pyproject.toml"),
    ],
)
def test_dockerfile_copies_project(dockerfile, source, destination):
    copies = [line.split() for line in dockerfile if line.startswith("COPY ")]
    assert any(parts[-2:] == [source, destination] for parts in copies), f"no COPY {source} {destination}"
    assert (ROOT / source).exists()


@pytest.mark.parametrize("path", ["dags/", "plugins/", "include/", "pyproject.toml", "requirements.txt"])
def test_dockerignore_keeps_project_files(path):
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert path not in ignored
    assert path.rstrip("/") not in ignored


def test_package_finds_templates_in_image_layout():
    """The editable install keeps plugins/ and include/ side by side, as settings.PROJECT_ROOT expects."""
    assert (settings.PROJECT_ROOT / "plugins" / "invoice_delivery" / "settings.py").exists()
    assert (settings.PROJECT_ROOT / "include" / "templates").is_dir()


def test_enabled_channels_clients_accept_defaults(compose, monkeypatch):
    """Every channel enabled by default gets a client from its default connection, as the send task builds it."""
    from invoice_delivery.tasks import client_for

    env = _environment(compose, "airflow-worker")
    enabled = env["INVOICE_DELIVERY_CHANNELS"].split(",")
    assert set(enabled) <= set(ALL_CHANNELS)
    for channel in ALL_CHANNELS:
        variable = f"AIRFLOW_CONN_{channel.upper()}_GATEWAY"
        monkeypatch.setenv(variable, env[variable])
    for channel in enabled:
        client_for(channel)
