"""Run the gateway simulator: ``python -m invoice_delivery.simulator --port 8025 [--config FILE]``.

The simulator listens on loopback only and runs as one uvicorn worker, because its state is in
memory. The e-mail channel's SMTP server listens on its own port (``--smtp-port``, 8026 unless
the configuration sets another). Environment variables that override credentials are listed in
:mod:`invoice_delivery.simulator.config`.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from invoice_delivery.simulator.app import create_app
from invoice_delivery.simulator.config import (
    CHANNELS,
    DEFAULT_PORT,
    DEFAULT_SMTP_PORT,
    SimulatorConfigError,
    is_loopback_host,
    load_config,
)

log = logging.getLogger("invoice_delivery.simulator")

GRACEFUL_SHUTDOWN_S = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; exit with status 2 on a non-loopback host."""
    parser = argparse.ArgumentParser(
        prog="python -m invoice_delivery.simulator",
        description="Serve the channel gateway contracts (HTTP, and SMTP for e-mail) on a loopback address.",
    )
    parser.add_argument("--host", help="loopback address to listen on (default: the config's host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"TCP port to listen on (default: the config's port, {DEFAULT_PORT})")
    parser.add_argument(
        "--smtp-port",
        type=int,
        help=f"TCP port of the SMTP server (default: the config's email.smtp_port, {DEFAULT_SMTP_PORT})",
    )
    parser.add_argument(
        "--config", metavar="JSON_FILE", help="simulator configuration file (default: built-in defaults)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--access-log", action="store_true", help="log one line per HTTP request")
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="listen on and post receipts to non-loopback addresses; only inside an isolated container network",
    )
    args = parser.parse_args(argv)
    if args.host is not None and not args.allow_non_loopback and not is_loopback_host(args.host):
        parser.error(
            f"--host {args.host!r} is not a loopback address; the simulator listens on loopback only, "
            "so use 127.0.0.1, ::1 or localhost"
        )
    for option, port in (("--port", args.port), ("--smtp-port", args.smtp_port)):
        if port is not None and not 0 < port < 65536:
            parser.error(f"{option} {port} is out of range; use a port from 1 to 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    """Load the configuration and serve until interrupted; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except SimulatorConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    if args.allow_non_loopback:
        overrides["allow_non_loopback"] = True
    if args.smtp_port is not None:
        overrides["email"] = config.email.model_copy(update={"smtp_port": args.smtp_port})
    config = config.model_copy(update=overrides)
    if config.email.smtp_port == config.port:
        print(
            f"error: the HTTP port and the SMTP port are both {config.port}; "
            "set --smtp-port or email.smtp_port to another port",
            file=sys.stderr,
        )
        return 2

    app = create_app(config)
    log.info(
        "Starting gateway simulator on http://%s:%d with channels %s, SMTP on port %d (seed %d)",
        config.host,
        config.port,
        ", ".join(CHANNELS),
        config.email.smtp_port,
        config.seed,
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        workers=1,
        # uvicorn's own INFO lines repeat the start message; access lines need INFO when requested.
        log_level="info" if args.access_log else "warning",
        access_log=args.access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
