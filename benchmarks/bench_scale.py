"""Measure invoice_delivery at scale through Airflow and bare, plus PDF rate, rate-limit adherence and latency.

``python -m benchmarks.bench_scale [--invoices 1000000]`` (``make bench``):

1. generates N invoices with COPY into a fresh database on a temporary embedded PostgreSQL, and
   copies that database (``CREATE DATABASE ... TEMPLATE``) for the bare baseline and the profile;
2. runs ``invoice_delivery`` once with ``airflow dags test --use-executor`` (LocalExecutor, four
   task processes at most) to the gateway simulator, with faults and rate limits off. Each task's
   start and end come from the metadata database, and the memory of every process of the run is
   sampled;
3. runs the same stage functions in one process without Airflow on the copy
   (``benchmarks.bare_pipeline``), then profiles the slowest bare stage's first batch with cProfile;
4. renders mailbox and paper documents on their own and reports PDFs per CPU second;
5. sends SMS with ``rate_limit_per_s`` R from parallel worker processes and checks the
   simulator's per-second counts against R;
6. feeds invoices at a steady rate to a real scheduler for each schedule interval asked for and
   reports ready-to-accepted percentiles.

The last four lines are ``end_to_end_invoices_per_s``, ``airflow_vs_bare``, ``pdf_per_s_per_core``
and ``peak_task_rss_mb``. All figures also go to ``results.json`` in the log folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pstats
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks import airflow_run, latency, plots, rate_limit
from benchmarks.common import (
    PROJECT_ROOT,
    configure_logging,
    exit_on_sigterm,
    free_port,
    machine_summary,
    temporary_postgres,
)

log = logging.getLogger("benchmarks")

STAGES = ("extract", "validate", "route", "render", "send")
TEXT_CHANNELS = "sms,push"
PDF_CHANNELS = "mailbox,paper"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000, help="invoices to generate (default 1000000)")
    # 25,000 kept every task process under 500 MiB at N=100,000 and N=1,000,000 (the validate tasks
    # peak, at 456 to 470 MiB, most of it the imports of Great Expectations and the Task SDK).
    parser.add_argument("--batch-size", type=int, default=25_000,
                        help="the DAG's batch_size param and the bare batch size (default 25000)")
    parser.add_argument("--channels", default=TEXT_CHANNELS,
                        help=f"INVOICE_DELIVERY_CHANNELS of the scale run (default {TEXT_CHANNELS}: text channels)")
    parser.add_argument("--airflow-mode", choices=("executor", "in-process", "both"), default="executor",
                        help="airflow dags test with --use-executor, without it, or both (default executor)")
    parser.add_argument("--airflow-timeout", type=float, default=3 * 3600, help="seconds for one DAG run")
    parser.add_argument("--skip-bare", action="store_true", help="skip the bare baseline and the profile")
    parser.add_argument("--pdf-invoices", type=int, default=2_000,
                        help="invoices for the PDF measurement, 0 to skip (default 2000)")
    parser.add_argument("--rate", type=float, default=200,
                        help="SMS rate_limit_per_s to check, 0 to skip (default 200)")
    parser.add_argument("--rate-invoices", type=int, default=4_000, help="invoices for the rate check (default 4000)")
    parser.add_argument("--latency-seconds", type=float, default=600,
                        help="seconds of steady arrivals per schedule, 0 to skip (default 600)")
    parser.add_argument("--latency-schedules", default="5,1",
                        help="schedule intervals: minutes (5 or 5m) or seconds (30s), comma-separated (default 5,1)")
    parser.add_argument("--latency-rate", type=int, default=100, help="arriving invoices per second (default 100)")
    parser.add_argument("--plots-dir", type=Path, default=None, help="write the PNG plots here (default: log folder)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the generated invoices (default 11)")
    parser.add_argument("--log-dir", type=Path, default=None, help="log folder (default .data/bench/scale-<time>)")
    args = parser.parse_args(argv)
    try:
        latency.parse_schedules(args.latency_schedules)
    except ValueError as exc:
        parser.error(f"--latency-schedules: {exc}")
    return args


def copy_database(server, source: str, name: str) -> None:
    with psycopg.connect(server.target("postgres").conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')


def reset_simulator(url: str) -> None:
    with httpx.Client(trust_env=False, timeout=120) as client:
        client.post(f"{url}/_sim/reset").raise_for_status()


def run_bare(env: dict[str, str], args: argparse.Namespace, extra: list[str], log_file: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bare_pipeline", "--batch-size", str(args.batch_size), *extra]
    with log_file.open("w") as err:
        done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                              check=False)
    if done.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"bare pipeline {' '.join(extra)} failed with exit {done.returncode}:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_counts(target) -> dict[str, int]:
    from benchmarks.bare_pipeline import stage_counts as counts
    from invoice_delivery import db

    with db.connect(target) as conn:
        return counts(conn)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    from invoice_delivery import db, devenv, settings
    from invoice_delivery.ingest.generator import generate
    from invoice_delivery.simulator.process import SimulatorProcess

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    logs = (args.log_dir or settings.data_dir() / "bench" / f"scale-{stamp}").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    configure_logging(logs / "bench.log")
    plots_dir = (args.plots_dir or logs).resolve()
    results: dict[str, Any] = {"machine": machine_summary(), "args": {k: str(v) for k, v in vars(args).items()}}
    print(f"machine: {results['machine']}")
    print(f"invoices: {args.invoices}, batch size {args.batch_size}, channels {args.channels}; logs in {logs}",
          flush=True)
    started = time.monotonic()

    with temporary_postgres("invoice-bench-scale-") as (server, target, _folder):
        sim_port, smtp_port = free_port(), free_port()
        with SimulatorProcess(sim_port, config={"seed": args.seed}, smtp_port=smtp_port) as sim:
            base = {**os.environ, **devenv.gateway_connections(sim_port, smtp_port=smtp_port),
                    "INVOICE_DELIVERY_CHANNELS": args.channels, "INVOICE_DELIVERY_QUIET_HOURS": "off"}

            with db.connect(target) as conn:
                now = datetime.now(UTC)
                report = generate(conn, args.invoices, seed=args.seed, ready_from=now - timedelta(minutes=4),
                                  ready_until=now - timedelta(seconds=1))
            results["generate_s"] = report.elapsed_seconds
            print(f"generated: {report.invoices} invoices in {report.elapsed_seconds:.1f}s "
                  f"({report.invoices / report.elapsed_seconds:,.0f}/s)", flush=True)
            copies = ["invoices_bare", "invoices_profile"] + (["invoices_inprocess"] if args.airflow_mode == "both"
                                                              else [])
            for name in copies:
                copy_database(server, settings.INVOICE_DB_NAME, name)

            server.ensure_database("airflow")
            env = airflow_run.airflow_environment(base, server, target, logs / "airflow", "airflow")
            migrate_started = time.monotonic()
            devenv.run_airflow(["db", "migrate"], env, log_file=logs / "airflow-db-migrate.log")
            results["airflow_db_migrate_s"] = time.monotonic() - migrate_started
            copy_database(server, "airflow", "airflow_template")

            results["airflow"] = {}
            modes = ["executor", "in-process"] if args.airflow_mode == "both" else [args.airflow_mode]
            for mode in modes:
                invoice_db = target if mode == modes[0] else server.target("invoices_inprocess")
                run_env = {**env, "AIRFLOW_CONN_INVOICE_DB": invoice_db.airflow_uri()}
                reset_simulator(sim.url)
                print(f"running invoice_delivery through Airflow ({mode}) ...", flush=True)
                with ExitStack() as stack:
                    if mode == "executor":
                        stack.enter_context(airflow_run.api_server(run_env, logs / "api-server.log"))
                    figures = airflow_run.run_dag_test(
                        run_env, "invoice_delivery", {"batch_size": args.batch_size},
                        use_executor=mode == "executor", log_file=logs / f"dags-test-{mode}.log",
                        metadata=server.target("airflow"), timeout_s=args.airflow_timeout)
                results["airflow"][mode] = {**figures.__dict__, "counts": stage_counts(invoice_db)}
                print_airflow(mode, results["airflow"][mode])

            if not args.skip_bare:
                reset_simulator(sim.url)
                bare_env = {**base, "AIRFLOW_CONN_INVOICE_DB": server.target("invoices_bare").airflow_uri()}
                print("running the bare baseline ...", flush=True)
                results["bare"] = run_bare(bare_env, args, [], logs / "bare.log")
                slowest = max(STAGES, key=lambda s: results["bare"]["stages"][s]["wall_s"])
                reset_simulator(sim.url)
                profile_env = {**base, "AIRFLOW_CONN_INVOICE_DB": server.target("invoices_profile").airflow_uri()}
                print(f"profiling the bare {slowest} stage (first batch) ...", flush=True)
                run_bare(profile_env, args, ["--profile", slowest, "--profile-output", str(logs / "profile.pstats"),
                                             "--stop-after", slowest, "--max-batches", "1"],
                         logs / "profile.log")
                results["profile"] = {"stage": slowest, "top": profile_top(logs / "profile.pstats")}

            if args.pdf_invoices:
                results["pdf"] = measure_pdfs(server, base, args, logs)

            if args.rate:
                reset_simulator(sim.url)
                rate = rate_limit.measure(server, sim.url, sim_port, smtp_port, base, logs, rate=args.rate,
                                          invoices=args.rate_invoices, workers=2)
                results["rate_limit"] = {**rate.__dict__, "utilisation": rate.utilisation}
                print(rate_limit.describe(rate), flush=True)

            if args.latency_seconds > 0:
                results["latency"] = {}
                for interval in latency.parse_schedules(args.latency_schedules):
                    reset_simulator(sim.url)
                    print(f"latency at a {latency.schedule_name(interval)} schedule: {args.latency_seconds:.0f}s of "
                          "arrivals ...", flush=True)
                    measured = latency.measure(server, base, logs, interval_s=interval,
                                               seconds=args.latency_seconds, rate=args.latency_rate,
                                               metadata_template="airflow_template")
                    results["latency"][str(interval)] = measured.__dict__
                    print(latency.describe(measured), flush=True)

    results["total_s"] = time.monotonic() - started
    return finish(results, args, logs, plots_dir)


def measure_pdfs(server, base: dict[str, str], args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """Render mailbox and paper documents for a fresh set of invoices; return PDFs per CPU second of each."""
    from invoice_delivery import db, migrate
    from invoice_delivery.ingest.generator import generate

    server.ensure_database("invoices_pdf")
    target = server.target("invoices_pdf")
    migrate.apply_migrations(target)
    with db.connect(target) as conn:
        now = datetime.now(UTC)
        generate(conn, args.pdf_invoices, seed=args.seed + 1, ready_from=now - timedelta(minutes=4), ready_until=now)
    env = {**base, "AIRFLOW_CONN_INVOICE_DB": target.airflow_uri(), "INVOICE_DELIVERY_CHANNELS": PDF_CHANNELS}
    print(f"rendering {args.pdf_invoices} invoices for mailbox and paper ...", flush=True)
    figures = run_bare(env, args, ["--stop-after", "render", "--pdf-timing"], logs / "pdf.log")
    stages = figures["stages"]
    out = {"render": stages["render"]}
    for channel in ("mailbox", "paper"):
        entry = stages[f"pdf_{channel}"]
        out[channel] = {"documents": entry["calls"], "cpu_s": entry["cpu_s"], "wall_s": entry["wall_s"],
                        "per_cpu_s": entry["calls"] / entry["cpu_s"] if entry["cpu_s"] else 0.0}
    documents = out["mailbox"]["documents"] + out["paper"]["documents"]
    cpu = out["mailbox"]["cpu_s"] + out["paper"]["cpu_s"]
    out["combined_per_cpu_s"] = documents / cpu if cpu else 0.0
    print(f"PDFs per second per core: mailbox {out['mailbox']['per_cpu_s']:.0f} ({out['mailbox']['documents']} "
          f"documents), paper {out['paper']['per_cpu_s']:.0f} ({out['paper']['documents']} documents)", flush=True)
    return out


def profile_top(path: Path, lines: int = 25) -> str:
    buffer = StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(lines)
    buffer.write("\n")
    stats.sort_stats("cumulative").print_stats(lines)
    return buffer.getvalue()


def print_airflow(mode: str, figures: dict[str, Any]) -> None:
    print(f"airflow ({mode}): command {figures['command_wall_s']:.1f}s, tasks from first start to last end "
          f"{figures['run_wall_s']:.1f}s, task states {figures['states']}")
    print(f"  largest task process {figures['peak_task_rss_mb']:.0f} MiB: {figures['peak_task_title']}")
    for mb, title in figures["processes"]:
        print(f"  {mb:7.0f} MiB  {title}")
    counts = figures["counts"]
    for stage in ("extract", "validate", "quality_gate", "route", "render", "send"):
        entry = figures["stages"].get(stage)
        if not entry:
            continue
        count = counts.get(stage)
        rate = f"{count / entry['wall_s']:,.0f}/s" if count and entry["wall_s"] else "-"
        print(f"  {stage:13s} {entry['instances']:3d} instances, wall {entry['wall_s']:7.1f}s, "
              f"busy {entry['busy_s']:7.1f}s, {count if count is not None else '-'} handled, {rate}")
    sys.stdout.flush()


def finish(results: dict[str, Any], args: argparse.Namespace, logs: Path, plots_dir: Path) -> int:
    """Print the comparison and the closing lines, write results.json and the plots."""
    airflow = results["airflow"].get(args.airflow_mode if args.airflow_mode != "both" else "executor")
    bare = results.get("bare")
    print()
    print(f"{'stage':10s} {'count':>9s} {'airflow s':>10s} {'airflow /s':>11s} {'bare s':>8s} {'bare /s':>9s}"
          f" {'bare cpu s':>10s}")
    airflow_rates, bare_rates = [], []
    for stage in STAGES:
        count = airflow["counts"][stage]
        wall = airflow["stages"].get(stage, {}).get("wall_s", 0.0)
        airflow_rate = count / wall if wall else 0.0
        airflow_rates.append(airflow_rate)
        line = f"{stage:10s} {count:9d} {wall:10.1f} {airflow_rate:11,.0f}"
        if bare:
            entry = bare["stages"][stage]
            bare_rate = entry["count"] / entry["wall_s"] if entry["wall_s"] else 0.0
            bare_rates.append(bare_rate)
            line += f" {entry['wall_s']:8.1f} {bare_rate:9,.0f} {entry['cpu_s']:10.1f}"
        print(line)
    if bare:
        record = bare["stages"]["record"]
        print(f"{'record':10s} {record['count']:9d} {'(inside':>10s} {'each task)':>11s} {record['wall_s']:8.1f} "
              f"{record['count'] / record['wall_s'] if record['wall_s'] else 0:9,.0f} {record['cpu_s']:10.1f}"
              f"   audit events; time inside the ledger functions, part of the stages above")
        print(f"bare: {bare['total_wall_s']:.1f}s in all, peak RSS {bare['peak_rss_mb']:.0f} MiB")

    n = args.invoices
    end_to_end = n / airflow["run_wall_s"] if airflow["run_wall_s"] else 0.0
    ratio = (bare["total_wall_s"] / airflow["run_wall_s"]) if bare and airflow["run_wall_s"] else float("nan")
    pdf = results.get("pdf", {}).get("combined_per_cpu_s", float("nan"))
    results["summary"] = {"end_to_end_invoices_per_s": end_to_end, "airflow_vs_bare": ratio,
                          "pdf_per_s_per_core": pdf, "peak_task_rss_mb": airflow["peak_task_rss_mb"],
                          "airflow_command_invoices_per_s": n / airflow["command_wall_s"]}
    if "profile" in results:
        print(f"\ncProfile of the bare {results['profile']['stage']} stage, first batch "
              f"(top functions by own time, then cumulative):")
        print("\n".join(results["profile"]["top"].splitlines()[:70]))

    (logs / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plots_dir.mkdir(parents=True, exist_ok=True)
    series = {"Airflow (LocalExecutor)": airflow_rates}
    if bare_rates:
        series["bare, one process"] = bare_rates
    plots.stage_throughput(plots_dir / "benchmark-stages.png", list(STAGES), series,
                           f"Invoices per second per stage, N={n:,}, channels {args.channels}, {os.cpu_count()} cores")
    if results.get("latency"):
        plots.latency_cdf(plots_dir / "benchmark-latency.png",
                          {f"{latency.schedule_name(int(m))} schedule": r["samples"]
                           for m, r in results["latency"].items()},
                          f"Ready to accepted, {args.latency_rate} invoices/s arriving")
    print(f"\ntotal: {results['total_s']:.0f}s; figures in {logs / 'results.json'}, plots in {plots_dir}")
    print(f"airflow command wall: {airflow['command_wall_s']:.1f}s "
          f"({results['summary']['airflow_command_invoices_per_s']:,.0f} invoices/s including CLI start and DAG parse)")
    print(f"end_to_end_invoices_per_s: {end_to_end:.0f}")
    print(f"airflow_vs_bare: {ratio:.2f}")
    print(f"pdf_per_s_per_core: {pdf:.0f}")
    print(f"peak_task_rss_mb: {airflow['peak_task_rss_mb']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
