"""Run the gateway simulator as a child process, for tests, the demo and the benchmark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from invoice_delivery.simulator.config import SimulatorConfig, is_loopback_host

OUTPUT_TAIL_CHARS = 4000


class SimulatorStartError(RuntimeError):
    """Raised when the simulator process exits or does not respond to ``/health`` in time."""


class SimulatorProcess:
    """Start ``python -m invoice_delivery.simulator`` on a loopback port and stop it on exit.

    ``config`` is a :class:`SimulatorConfig` or a dict of its fields; its port is replaced by
    ``port``. The e-mail channel's SMTP server listens on ``smtp_port`` if given, else on the
    configuration's ``email.smtp_port`` if the configuration sets it, else on a free port chosen
    here, so that several simulators can run at once. :attr:`smtp_port` is the port in use.
    ``env`` adds or replaces environment variables of the child, for example the credential
    overrides. The child's stdout and stderr go to a temporary file, which :meth:`output`
    returns and start errors quote.

    Example::

        with SimulatorProcess(8025) as sim:
            httpx.get(f"{sim.url}/health")
            smtplib.SMTP(sim.host, sim.smtp_port)
    """

    def __init__(
        self,
        port: int,
        config: SimulatorConfig | Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        smtp_port: int | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if not is_loopback_host(host):
            raise ValueError(f"host {host!r} is not a loopback address; use 127.0.0.1 or ::1")
        if config is None:
            config = SimulatorConfig()
        elif not isinstance(config, SimulatorConfig):
            config = SimulatorConfig.model_validate(dict(config))
        if smtp_port is None:
            configured = "smtp_port" in config.email.model_fields_set
            smtp_port = config.email.smtp_port if configured else _free_port(host)
        if smtp_port == port:
            raise ValueError(f"smtp_port {smtp_port} equals port; give the SMTP server its own port")
        self.port = port
        self.host = host
        self.smtp_port = smtp_port
        email = config.email.model_copy(update={"smtp_port": smtp_port})
        self.config = config.model_copy(update={"host": host, "port": port, "email": email})
        self.env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def url(self) -> str:
        """Base URL of the running simulator, e.g. ``http://127.0.0.1:8025``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the child and wait until ``/health`` responds with 200.

        Raises:
            SimulatorStartError: the child exited or did not respond within ``start_timeout_s``;
                the message quotes the end of its output.
        """
        if self._process is not None:
            raise RuntimeError(f"the simulator on {self.url} is already running; stop it first")
        self._workdir = Path(tempfile.mkdtemp(prefix="gateway-simulator-"))
        config_file = self._workdir / "config.json"
        config_file.write_text(self.config.model_dump_json(), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "invoice_delivery.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--smtp-port",
            str(self.smtp_port),
            "--config",
            str(config_file),
        ]
        with open(self._workdir / "output.log", "wb") as output:
            self._process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Send SIGTERM, then SIGKILL after ``stop_timeout_s``, and remove the temporary files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def output(self) -> str:
        """Return the end of the child's combined stdout and stderr so far."""
        if self._workdir is None:
            return ""
        try:
            text = (self._workdir / "output.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[-OUTPUT_TAIL_CHARS:]

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while time.monotonic() < deadline:
                exit_code = self._process.poll()
                if exit_code is not None:
                    raise SimulatorStartError(
                        f"gateway simulator on {self.url} exited with status {exit_code} before responding to "
                        f"/health. Its output:\n{self.output()}"
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise SimulatorStartError(
            f"gateway simulator on {self.url} did not respond to /health within {self.start_timeout_s:g} s; "
            f"check that the port is free. Its output:\n{self.output()}"
        )


def _free_port(host: str) -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host.strip("[]"), 0))
        return sock.getsockname()[1]
