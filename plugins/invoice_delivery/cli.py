"""Run the invoice delivery demo or the local stack, and read the ledger.

Run ``invoice-delivery --help`` for the commands. Commands that read the ledger start the
embedded PostgreSQL for their own duration when it is not running (and no external database is
configured), so they work after ``make demo`` has exited.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from invoice_delivery import settings

log = logging.getLogger("invoice_delivery.cli")

SAMPLES_DIR = settings.PROJECT_ROOT / "include" / "samples" / "peppol"
BROKEN_DIR = settings.PROJECT_ROOT / "include" / "samples" / "broken"
API_PORT = 8080


def _connect():
    from invoice_delivery import db

    return db.connect(settings.invoice_db_target())


def cmd_migrate(args: argparse.Namespace) -> int:
    from invoice_delivery import devenv

    with devenv.database():
        pass
    print(f"Invoice database at {settings.invoice_db_target().describe()} is up to date.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from invoice_delivery import devenv, reports

    with devenv.database(), _connect() as conn:
        counts = reports.status_counts(conn)
    print(json.dumps(counts, indent=2, sort_keys=True) if args.json else reports.format_status(counts))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from invoice_delivery import devenv, reports

    with devenv.database(), _connect() as conn:
        invoices = reports.invoice_path(conn, args.invoice_number)
    if not invoices:
        print(f"No invoice numbered {args.invoice_number!r} in billing.invoice; "
              f"`invoice-delivery status` lists what the ledger contains.", file=sys.stderr)
        return 1
    print("\n\n".join(reports.format_invoice_path(invoice) for invoice in invoices))
    return 0


def cmd_validation(args: argparse.Namespace) -> int:
    from invoice_delivery import devenv

    with devenv.database(), _connect() as conn:
        row = conn.execute("SELECT * FROM delivery.validation_result WHERE batch_id = %s", (args.batch_id,)).fetchone()
    if row is None:
        print(f"No validation result for batch {args.batch_id}; the batch ids are in the validate task's log",
              file=sys.stderr)
        return 1
    summary = {key: row[key] for key in ("batch_id", "run_id", "validated", "passed", "quarantined", "by_rule")}
    summary["created_at"] = row["created_at"].isoformat()
    print(json.dumps(summary if args.summary else {**summary, "result": row["result"]}, indent=2, default=str))
    return 0


def _parse_day(value: str, option: str) -> datetime:
    try:
        return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        # Exit 2 like every other usage error of this command line.
        print(f"{option} {value!r} is not a date; use YYYY-MM-DD", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_audit(args: argparse.Namespace) -> int:
    """Print one invoice's trail, or export a period's events as CSV or JSON lines."""
    import csv

    from invoice_delivery import devenv, reports

    if bool(args.invoice_number) == bool(args.date_from or args.date_to):
        print("give either INVOICE_NUMBER or --from DATE --to DATE", file=sys.stderr)
        return 2
    with devenv.database(), _connect() as conn:
        if args.invoice_number:
            events = list(reports.audit_events(conn, invoice_number=args.invoice_number))
            if not events:
                print(f"No audit events for invoice number {args.invoice_number!r}", file=sys.stderr)
                return 1
            print(reports.format_audit_trail(events))
            return 0
        if not (args.date_from and args.date_to):
            print("an export needs both --from and --to", file=sys.stderr)
            return 2
        start, end = _parse_day(args.date_from, "--from"), _parse_day(args.date_to, "--to") + timedelta(days=1)
        if end <= start:
            print(f"--to {args.date_to} is before --from {args.date_from}", file=sys.stderr)
            return 2
        out = args.output.open("w", newline="") if args.output else sys.stdout
        count = 0
        try:
            writer = csv.DictWriter(out, fieldnames=reports.AUDIT_COLUMNS) if args.format == "csv" else None
            if writer:
                writer.writeheader()
            for event in reports.audit_events(conn, occurred_from=start, occurred_until=end):
                count += 1
                # Both formats write the time as ISO 8601, so exports of either kind compare as text.
                event = {**event, "occurred_at": event["occurred_at"].isoformat()}
                if writer:
                    writer.writerow({**event, "details": json.dumps(event["details"], sort_keys=True, default=str)})
                else:
                    out.write(json.dumps(event, default=str, sort_keys=True) + "\n")
        finally:
            if args.output:
                out.close()
    print(f"{count} audit events exported", file=sys.stderr)
    return 0


def cmd_purge_bodies(args: argparse.Namespace) -> int:
    """Delete stored message bodies older than the given age; hashes and the trail stay."""
    from invoice_delivery import devenv, ledger
    from invoice_delivery.context import RunContext

    if args.older_than_days < 1:
        print(f"--older-than-days must be at least 1, got {args.older_than_days}", file=sys.stderr)
        return 2
    ctx = RunContext.manual(os.environ.get("USER", "unknown"), f"purge message bodies older than "
                                                               f"{args.older_than_days} days", task_id="purge-bodies")
    with devenv.database(), _connect() as conn:
        deleted = conn.execute(
            "DELETE FROM delivery.message m USING delivery.delivery d WHERE d.delivery_id = m.delivery_id"
            " AND m.created_at < now() - %s * interval '1 day' RETURNING m.delivery_id, d.invoice_id",
            (args.older_than_days,),
        ).fetchall()
        ledger.record_events(conn, ctx, "message_body_purged", [{"details": {"count": len(deleted)}}])
    print(f"{len(deleted)} message bodies purged; their SHA-256 hashes stay in delivery.delivery")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from invoice_delivery import devenv
    from invoice_delivery.ingest.ubl import ingest_files

    paths: list[Path] = []
    for path in args.paths:
        if path.is_dir():
            paths.extend(sorted(path.glob("*.xml")))
        elif path.is_file():
            paths.append(path)
        else:
            print(f"{path} is neither a file nor a folder; give UBL files or folders of them", file=sys.stderr)
            return 2
    with devenv.database(), _connect() as conn:
        report = ingest_files(conn, paths, ready_at=datetime.now(UTC), rejected_dir=args.rejected_dir)
    print(report)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from invoice_delivery import devenv
    from invoice_delivery.ingest.generator import generate

    if args.count < 1:
        print(f"count must be at least 1, got {args.count}", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    with devenv.database(), _connect() as conn:
        report = generate(conn, args.count, seed=args.seed, ready_from=now - timedelta(minutes=args.spread_minutes),
                          ready_until=now)
    print(report)
    return 0


def _run_step(title: str) -> float:
    print(f"==> {title}", flush=True)
    return time.monotonic()


def _fresh_inbox(source: Path) -> Path:
    """Copy the sample files into an empty inbox under the data folder; ingest moves rejects out of it."""
    import shutil

    inbox = settings.data_dir() / "inbox"
    for folder in (inbox, inbox.parent / "rejected"):
        shutil.rmtree(folder, ignore_errors=True)
    inbox.mkdir(parents=True)
    for path in source.glob("*.xml"):
        shutil.copy2(path, inbox / path.name)
    return inbox


DEMO_SMS_DEADLINE_S = 20
DEMO_SMS_RECEIPT_LOSS = 0.1


def cmd_demo(args: argparse.Namespace) -> int:
    """Set up everything, run the lifecycle through Airflow with real receipts, print the ledger, stop.

    SMS receipts are lost on purpose for a tenth of the messages and the SMS receipt deadline is
    cut to 20 seconds, so the demo shows deliveries expiring and reaching the customer by the next
    channel of their plan. Quiet hours are off unless ``INVOICE_DELIVERY_QUIET_HOURS`` is set.
    """
    from invoice_delivery import devenv, reports
    from invoice_delivery.ingest.generator import generate
    from invoice_delivery.ingest.ubl import ingest_files
    from invoice_delivery.reconcile.receiver import create_receiver_app, secrets_from_env, serve_in_thread
    from invoice_delivery.simulator.process import SimulatorProcess

    started = time.monotonic()
    # Quiet hours off, so the demo shows SMS and push at any hour of the day; `make up` keeps them.
    base = {"INVOICE_DELIVERY_QUIET_HOURS": "off", **os.environ, **devenv.gateway_connections(
        devenv.simulator_port(), extra_overrides={"sms": {"receipt_deadline_s": DEMO_SMS_DEADLINE_S}})}
    env = devenv.airflow_env(base)
    logs = settings.data_dir() / "logs"
    _run_step("Starting the embedded PostgreSQL and applying migrations (the invoice database starts empty)")
    with devenv.database(reset_invoices=True):
        _run_step("Migrating Airflow's metadata database")
        devenv.run_airflow(["db", "migrate"], env, log_file=logs / "airflow-db-migrate.log")
        now = datetime.now(UTC)
        with _connect() as conn:
            _run_step(f"Ingesting the Peppol samples from {SAMPLES_DIR}")
            print(ingest_files(conn, sorted(SAMPLES_DIR.glob("*.xml")), ready_at=now - timedelta(minutes=2)))
            _run_step(f"Ingesting the deliberately broken invoices from {BROKEN_DIR}")
            inbox = _fresh_inbox(BROKEN_DIR)
            report = ingest_files(conn, sorted(inbox.glob("*.xml")), ready_at=now - timedelta(minutes=2),
                                  rejected_dir=inbox.parent / "rejected")
            print(report)
            _run_step(f"Generating {args.invoices} synthetic invoices")
            print(generate(conn, args.invoices, seed=args.seed, ready_from=now - timedelta(minutes=4),
                           ready_until=now - timedelta(seconds=1)))

        receiver = create_receiver_app(secrets_from_env(env), settings.invoice_db_target)
        with serve_in_thread(receiver, devenv.receiver_port()) as receiver_url:
            # Every push is opened at once in the demo: push has no delivery receipt, only "opened".
            sim_config = devenv.simulator_config(
                receiver_url, push={"open_rate": 1.0}, faults={"sms": {"receipt_loss_rate": DEMO_SMS_RECEIPT_LOSS}})
            _run_step(f"Starting the gateway simulator on 127.0.0.1:{devenv.simulator_port()}; signed receipts go "
                      f"to the local receiver at {receiver_url} (the api-server serves the same app in `make up`)")
            with SimulatorProcess(devenv.simulator_port(), config=sim_config, smtp_port=devenv.simulator_smtp_port()):
                _airflow_run(env, "invoice_delivery", "send every ready invoice", logs)
                _wait(DEMO_SMS_DEADLINE_S, "so SMS deliveries whose receipt was lost pass their deadline")
                _airflow_run(env, "delivery_reconciliation",
                             "apply receipts and status polls, expire overdue SMS and plan the next channel", logs)
                _airflow_run(env, "invoice_delivery", "send the fallback attempts", logs)
                time.sleep(3)
                _airflow_run(env, "delivery_reconciliation", "apply the fallbacks' receipts", logs)
        with _connect() as conn:
            counts = reports.status_counts(conn)
    print()
    print(reports.format_status(counts))
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s. Nothing is left running.")
    print("Next: .venv/bin/invoice-delivery status --json, or .venv/bin/invoice-delivery show INVOICE_NUMBER")
    return 0


def _airflow_run(env: dict[str, str], dag_id: str, purpose: str, logs: Path) -> None:
    from invoice_delivery import devenv

    step = _run_step(f"Running the DAG {dag_id} through Airflow to {purpose}")
    log_file = logs / f"{dag_id}-{datetime.now(UTC):%H%M%S}.log"
    devenv.run_airflow(["dags", "test", dag_id], env, log_file=log_file)
    print(f"    done in {time.monotonic() - step:.1f}s; Airflow's output is in {log_file}", flush=True)


def _wait(seconds: float, why: str) -> None:
    print(f"==> Waiting {seconds:.0f}s {why}", flush=True)
    time.sleep(seconds)


def cmd_up(args: argparse.Namespace) -> int:
    """Run Airflow (api-server on :8080, scheduler, dag-processor, triggerer) and the simulator."""
    from invoice_delivery import devenv
    from invoice_delivery.simulator.process import SimulatorProcess

    env = devenv.airflow_env()
    users_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    with devenv.database() as _:
        devenv.run_airflow(["db", "migrate"], env, log_file=settings.data_dir() / "logs" / "airflow-db-migrate.log")
        users_file.parent.mkdir(parents=True, exist_ok=True)
        if not users_file.exists():
            users_file.write_text(json.dumps({"admin": "admin"}))
        # Receipts go to the api-server, which serves the project's receiver through its plugin.
        sim_config = devenv.simulator_config(f"http://127.0.0.1:{API_PORT}/invoice-delivery")
        with SimulatorProcess(devenv.simulator_port(), config=sim_config, smtp_port=devenv.simulator_smtp_port()):
            print(f"Gateway simulator on http://127.0.0.1:{devenv.simulator_port()}")
            print("Airflow UI on http://localhost:8080  (login: admin / password: admin, local only)")
            print("Ctrl-C stops everything.", flush=True)
            import subprocess

            process = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env,
                                       start_new_session=True)
            try:
                return process.wait()
            except KeyboardInterrupt:
                print("\nStopping Airflow ...", flush=True)
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except Exception:
                    os.killpg(process.pid, signal.SIGKILL)
                return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from invoice_delivery.simulator.__main__ import main as simulator_main

    return simulator_main(["--host", "127.0.0.1", "--port", str(args.port)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="invoice-delivery", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply the invoice database migrations").set_defaults(func=cmd_migrate)

    status = sub.add_parser("status", help="count documents per channel and delivery state")
    status.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    status.set_defaults(func=cmd_status)

    show = sub.add_parser("show", help="print one invoice's path through the lifecycle")
    show.add_argument("invoice_number")
    show.set_defaults(func=cmd_show)

    validation = sub.add_parser("validation", help="print the stored Great Expectations result of a batch")
    validation.add_argument("batch_id", type=int)
    validation.add_argument("--summary", action="store_true", help="counts only, without the full GX result")
    validation.set_defaults(func=cmd_validation)

    audit = sub.add_parser("audit", help="print one invoice's audit trail, or export a period")
    audit.add_argument("invoice_number", nargs="?")
    audit.add_argument("--from", dest="date_from", help="first day of the export, YYYY-MM-DD (UTC)")
    audit.add_argument("--to", dest="date_to", help="last day of the export, inclusive, YYYY-MM-DD (UTC)")
    audit.add_argument("--format", choices=("csv", "jsonl"), default="jsonl", help="export format (default jsonl)")
    audit.add_argument("--output", type=Path, help="write the export to this file instead of standard output")
    audit.set_defaults(func=cmd_audit)

    purge = sub.add_parser("purge-bodies", help="delete message bodies past an age; hashes and trail stay")
    purge.add_argument("--older-than-days", type=int, required=True)
    purge.set_defaults(func=cmd_purge_bodies)

    ingest = sub.add_parser("ingest-ubl", help="ingest Peppol BIS Billing 3.0 UBL files or folders")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument("--rejected-dir", type=Path, help="move files that fail to parse here, with a reason file")
    ingest.set_defaults(func=cmd_ingest)

    generate = sub.add_parser("generate", help="generate synthetic Swedish consumer invoices")
    generate.add_argument("count", type=int)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--spread-minutes", type=int, default=5,
                          help="spread ready times over this many minutes before now (default 5)")
    generate.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="set up, run invoice_delivery once through Airflow, print the ledger")
    demo.add_argument("--invoices", type=int, default=1000, help="synthetic invoices to generate (default 1000)")
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("up", help="run Airflow with its UI on :8080 and the gateway simulator").set_defaults(func=cmd_up)

    simulator = sub.add_parser("simulator", help="run the gateway simulator in the foreground")
    simulator.add_argument("--port", type=int, default=8025)
    simulator.set_defaults(func=cmd_simulator)
    return parser


def check_settings() -> None:
    """Read every setting the DAGs will read, so a bad value stops the command at once, not a run later."""
    from invoice_delivery.channels import enabled_channels
    from invoice_delivery.quiet_hours import configured_window

    try:
        configured_window()
        enabled_channels()
        settings.invoice_db_target()
    except ValueError as exc:
        raise settings.ConfigurationError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_settings()
        return args.func(args)
    except settings.ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a failed Airflow command: its log file is named in the message
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
