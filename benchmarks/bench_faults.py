"""Deliver N invoices through faulty gateways, kill a send worker mid-batch, and count duplicates and losses.

``python -m benchmarks.bench_faults [--invoices 10000]`` (``make bench-faults``):

1. starts a temporary embedded PostgreSQL, a receipt receiver and the gateway simulator, all on
   free ports of 127.0.0.1, and generates N invoices with COPY;
2. runs extract, validate, route and render in this process, in batches;
3. sends each batch in its own worker process (``benchmarks.send_worker``, the real
   ``send_batch``). Every channel's send route replies 503 to 20 % of requests, delays 5 % past
   the client's timeout and replies 429 with Retry-After to 2 %. The worker of the middle batch
   is SIGKILLed after its rows were claimed, and failed tries are retried with backoff as Airflow
   would;
4. reconciles (receipts, status polls, expiry) and re-renders and re-sends fallback attempts
   until every invoice is final or the time limit passes.

The last two lines are ``duplicates: N`` (messages the simulator was offered again under an
idempotency key it had accepted) and ``lost: N`` (invoices in no final state). The exit status is
1 when either is not 0, or when the worker could not be killed mid-batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import (
    KillPlan,
    SendScheduler,
    build_clients,
    configure_logging,
    duplicates_offered,
    exit_on_sigterm,
    final_report,
    free_port,
    machine_summary,
    open_work,
    simulator_stats,
    temporary_postgres,
)

log = logging.getLogger("benchmarks")

DAG_ID = "bench_faults"
REQUEST_FAULTS = {
    "scope": "send",
    "error_5xx_rate": 0.20,
    "timeout_rate": 0.05,
    "timeout_hold_s": 3.0,
    "rate_429": 0.02,
    "retry_after": 1,
}
CLIENT_TIMEOUT_S = 2.0
CLIENT_MAX_ATTEMPTS = 3
# Short receipt deadlines, so that deliveries whose receipt was lost expire within the run.
RECEIPT_DEADLINE_S = 30
# Receipt faults on SMS, and final failures on some channels, so that fallbacks happen.
SMS_RECEIPT_FAULTS = {"receipt_loss_rate": 0.05, "receipt_duplicate_rate": 0.05, "receipt_jitter_s": 2.0}
OUTCOME_FAULTS = {
    "sms": {"dlr_failure_rate": 0.02},
    "mailbox": {"failure_rate": 0.02},
    "email": {"hard_bounce_rate": 0.01},
    "push": {"open_rate": 1.0},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000, help="invoices to generate (default 10000)")
    parser.add_argument("--batch-size", type=int, default=1_000, help="invoices per batch (default 1000)")
    parser.add_argument("--workers", type=int, default=2,
                        help="send worker processes at a time (default 2, one per core here)")
    parser.add_argument("--time-limit", type=float, default=900,
                        help="seconds from the first stage until the run gives up (default 900)")
    parser.add_argument("--kill-delay", type=float, default=3.0,
                        help="seconds between the claim showing up and the SIGKILL (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generator and the simulator (default 7)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="folder for the worker logs (default .data/bench/faults-<time>)")
    return parser.parse_args(argv)


def gateway_environment(sim_port: int, smtp_port: int) -> dict[str, str]:
    from invoice_delivery import devenv

    limits = {"timeout_s": CLIENT_TIMEOUT_S, "max_attempts": CLIENT_MAX_ATTEMPTS,
              "receipt_deadline_s": RECEIPT_DEADLINE_S}
    overrides = {channel: dict(limits) for channel in ("sms", "mailbox", "push", "email", "einvoice", "paper")}
    return devenv.gateway_connections(sim_port, smtp_port=smtp_port, extra_overrides=overrides)


def simulator_configuration(receiver_url: str, seed: int) -> dict[str, Any]:
    from invoice_delivery import devenv
    from invoice_delivery.simulator.config import CHANNELS

    faults = {channel: dict(REQUEST_FAULTS) for channel in CHANNELS}
    faults["sms"].update(SMS_RECEIPT_FAULTS)
    config = devenv.simulator_config(receiver_url, faults=faults, **OUTCOME_FAULTS)
    config["seed"] = seed
    return config


def run_stages(conn, run_id: str, batch_size: int, env: dict[str, str], target) -> tuple[list[int], dict[str, float]]:
    """Run extract, validate, route and render in this process; return the batch ids and each stage's seconds."""
    from invoice_delivery.channels import enabled_channels
    from invoice_delivery.context import RunContext
    from invoice_delivery.extract import extract_window
    from invoice_delivery.rendering import render_batch
    from invoice_delivery.routing import route_batch
    from invoice_delivery.validation import validate_batch

    def ctx(task_id: str) -> RunContext:
        return RunContext(dag_id=DAG_ID, run_id=run_id, task_id=task_id)

    timings: dict[str, float] = {}
    end = datetime.now(UTC)
    started = time.perf_counter()
    batch_ids = extract_window(conn, ctx("extract"), end - timedelta(minutes=5), end, batch_size=batch_size)
    conn.commit()
    timings["extract"] = time.perf_counter() - started

    started = time.perf_counter()
    for batch_id in batch_ids:
        validate_batch(conn, ctx("validate"), batch_id)
        conn.commit()
    timings["validate"] = time.perf_counter() - started

    enabled = enabled_channels()
    mailbox = build_clients(["mailbox"], target, env)["mailbox"]

    def matcher(numbers: list[str]) -> set[str]:
        return asyncio.run(mailbox.match(numbers))

    started = time.perf_counter()
    for batch_id in batch_ids:
        route_batch(conn, ctx("process.route"), batch_id, enabled=enabled, mailbox_matcher=matcher)
        conn.commit()
    timings["route"] = time.perf_counter() - started

    started = time.perf_counter()
    for batch_id in batch_ids:
        render_batch(conn, ctx("process.render"), batch_id)
        conn.commit()
    timings["render"] = time.perf_counter() - started
    return batch_ids, timings


def reconcile_once(conn, run_id: str, status_clients: dict[str, Any]) -> dict[str, int]:
    """Poll, apply every stored receipt and expire overdue deliveries, as delivery_reconciliation does."""
    from invoice_delivery.context import RunContext
    from invoice_delivery.reconcile.apply import RECEIPT_BATCH, apply_receipts, expire_overdue
    from invoice_delivery.reconcile.poll import poll_statuses

    ctx = RunContext(dag_id="bench_reconciliation", run_id=run_id, task_id="reconcile")
    totals: dict[str, int] = {}
    polled = poll_statuses(conn, status_clients)
    conn.commit()
    while True:
        applied = apply_receipts(conn, ctx)
        conn.commit()
        for key, value in applied.items():
            totals[key] = totals.get(key, 0) + value
        if applied["receipts"] - applied["waiting"] < RECEIPT_BATCH // 2:
            break
    expired = expire_overdue(conn, ctx)
    conn.commit()
    totals.update({"polled": polled["polled"], "expired": expired["expired"],
                   "next_attempts": expired.get("next_attempts", 0)})
    return totals


def prepare_fallbacks(conn, run_id: str, batch_size: int) -> list[int]:
    """Cut pending work (planned fallbacks, unsent messages) into batches and render them, as a new run would."""
    from invoice_delivery.context import RunContext
    from invoice_delivery.extract import extract_window
    from invoice_delivery.rendering import render_batch

    end = datetime.now(UTC)
    batch_ids = extract_window(conn, RunContext(DAG_ID, run_id, "extract"), end - timedelta(minutes=5), end,
                               batch_size=batch_size)
    conn.commit()
    for batch_id in batch_ids:
        render_batch(conn, RunContext(DAG_ID, run_id, "process.render"), batch_id)
        conn.commit()
    return batch_ids


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    os.environ["INVOICE_DELIVERY_QUIET_HOURS"] = "off"
    from invoice_delivery import db, settings
    from invoice_delivery.ingest.generator import generate
    from invoice_delivery.reconcile.poll import POLLED_CHANNELS
    from invoice_delivery.reconcile.receiver import create_receiver_app, secrets_from_env, serve_in_thread
    from invoice_delivery.simulator.process import SimulatorProcess

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    logs = (args.log_dir or settings.data_dir() / "bench" / f"faults-{stamp}").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    configure_logging(logs / "bench.log")
    print(f"machine: {machine_summary()}")
    print(f"invoices: {args.invoices}, batch size {args.batch_size}, {args.workers} send workers; logs in {logs}")

    with temporary_postgres("invoice-bench-faults-") as (_, target, _folder):
        sim_port, smtp_port, receiver_port = free_port(), free_port(), free_port()
        env = {**os.environ, "AIRFLOW_CONN_INVOICE_DB": target.airflow_uri(),
               **gateway_environment(sim_port, smtp_port)}
        os.environ.update(env)

        with db.connect(target) as conn:
            now = datetime.now(UTC)
            report = generate(conn, args.invoices, seed=args.seed, ready_from=now - timedelta(minutes=4),
                              ready_until=now - timedelta(seconds=1))
            conn.commit()
        print(f"generated: {report.invoices} invoices in {report.elapsed_seconds:.1f}s")

        receiver = create_receiver_app(secrets_from_env(env), lambda: target)
        with serve_in_thread(receiver, receiver_port) as receiver_url, \
                SimulatorProcess(sim_port, config=simulator_configuration(receiver_url, args.seed),
                                 smtp_port=smtp_port) as simulator, \
                db.connect(target) as conn:
            outcome = deliver(args, conn, env, target, logs, simulator.url, POLLED_CHANNELS)
            stats = simulator_stats(simulator.url)
            final = final_report(conn)

    print_summary(args, outcome, stats, final)
    duplicates = duplicates_offered(stats)
    print(f"duplicates: {duplicates}")
    print(f"lost: {final.lost}")
    return 0 if duplicates == 0 and final.lost == 0 and outcome["killed"] else 1


def deliver(args: argparse.Namespace, conn, env: dict[str, str], target, logs: Path, sim_url: str,
            polled_channels: tuple[str, ...]) -> dict[str, Any]:
    """Run the stages, the sends with the kill, and the reconcile loop; return what happened."""
    from invoice_delivery.channels import enabled_channels

    started = time.monotonic()
    deadline = started + args.time_limit
    run_id = f"bench__{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}"
    batch_ids, timings = run_stages(conn, run_id, args.batch_size, env, target)
    log.info("Stages done: %d batches; %s", len(batch_ids), {k: round(v, 1) for k, v in timings.items()})

    scheduler = SendScheduler(env, target, logs, run_id=run_id, parallelism=args.workers, dag_id=DAG_ID)
    kill = KillPlan(batch_ids[len(batch_ids) // 2], args.kill_delay) if batch_ids else None
    send = scheduler.run(batch_ids, deadline, kill=kill)
    timings["send"] = send.elapsed_s
    sent_at = time.monotonic()
    left = open_work(conn)
    log.info("Sends done in %.1fs: %d tries (%d retries), exit codes %s; open work after: %s",
             send.elapsed_s, send.tries, send.retries, dict(send.exit_codes), dict(left))
    kill_resolution = resolution_line(scheduler, kill)

    status_clients = build_clients([c for c in polled_channels if c in enabled_channels()], target, env)
    rounds, reconcile_totals, fallback_sends = 0, {}, []
    reconcile_started = time.monotonic()
    while time.monotonic() < deadline:
        rounds += 1
        totals = reconcile_once(conn, f"{run_id}__reconcile{rounds}", status_clients)
        for key, value in totals.items():
            reconcile_totals[key] = reconcile_totals.get(key, 0) + value
        fallback_batches = prepare_fallbacks(conn, f"{run_id}__fallback{rounds}", args.batch_size)
        if fallback_batches:
            fallback_sends.append(scheduler_for(env, target, logs, run_id, rounds, args.workers).run(
                fallback_batches, deadline))
        report = final_report(conn)
        if report.lost == 0:
            break
        time.sleep(2)
    timings["reconcile"] = time.monotonic() - reconcile_started
    return {
        "timings": timings, "batches": len(batch_ids), "send": send, "open_after_send": left,
        "killed": bool(kill and kill.killed_at), "kill": kill, "kill_resolution": kill_resolution,
        "rounds": rounds, "reconcile": reconcile_totals, "fallback_sends": fallback_sends,
        "to_all_sent_s": sent_at - started, "elapsed_s": time.monotonic() - started,
    }


def scheduler_for(env, target, logs: Path, run_id: str, round_number: int, workers: int) -> SendScheduler:
    return SendScheduler(env, target, logs, run_id=f"{run_id}__fallback{round_number}", parallelism=workers,
                         dag_id=DAG_ID)


def resolution_line(scheduler: SendScheduler, kill: KillPlan | None) -> str:
    """Return the retry's log line with the number of the killed worker's claimed rows found at the gateway."""
    if not kill or kill.killed_at is None:
        return "no worker was killed"
    log_file = scheduler.worker_logs.get((kill.batch_id, 2))
    if log_file is None or not log_file.exists():
        return "the killed batch was not retried"
    for line in log_file.read_text(errors="replace").splitlines():
        if "unfinished sends resolved by lookup" in line:
            return line.split(": ", 1)[-1]
    return "the retry found no rows left in sending"


def print_summary(args: argparse.Namespace, outcome: dict[str, Any], stats: dict[str, Any], final) -> None:
    send = outcome["send"]
    print()
    print("stage seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in outcome["timings"].items()))
    print(f"batches: {outcome['batches']}; send tries {send.tries} ({send.retries} retries), "
          f"exit codes {dict(send.exit_codes)}, tries per batch with a failure {dict(send.failures)}")
    kill = outcome["kill"]
    if kill and kill.killed_at:
        print(f"killed: the worker of batch {kill.batch_id} with {kill.left_sending} rows in sending; "
              f"its retry: {outcome['kill_resolution']}")
    else:
        print("killed: no (the worker finished before the kill; lower --kill-delay)")
    print(f"open work after the send stage: {dict(outcome['open_after_send']) or 'none'}")
    fallback_tries = sum(r.tries for r in outcome["fallback_sends"])
    print(f"reconcile: {outcome['rounds']} rounds, {outcome['reconcile']}, fallback send tries {fallback_tries}")
    faults = {name: dict(channel["faults_injected"]) for name, channel in stats.items() if channel["requests"]}
    print(f"simulator faults injected: {json.dumps(faults, sort_keys=True)}")
    accepted = {name: channel["messages_accepted"] for name, channel in stats.items()}
    print(f"simulator messages accepted: {json.dumps(accepted, sort_keys=True)}")
    duplicates = {name: channel["duplicates_offered"] for name, channel in stats.items()}
    print(f"simulator duplicates offered: {json.dumps(duplicates, sort_keys=True)}")
    print(f"final states: {json.dumps(dict(sorted(final.by_status.items())))}")
    print(f"delivered by channel: {json.dumps(dict(sorted(final.delivered_by_channel.items())))}")
    if final.lost:
        print(f"not final (first 10): {final.lost_examples}")
    print(f"time to every batch sent: {outcome['to_all_sent_s']:.1f}s "
          f"({args.invoices / outcome['to_all_sent_s']:.0f} invoices/s)")
    print(f"time to every invoice final: {outcome['elapsed_s']:.1f}s "
          f"({args.invoices / outcome['elapsed_s']:.0f} invoices/s, including the {RECEIPT_DEADLINE_S}s "
          f"receipt deadline of lost receipts)")


if __name__ == "__main__":
    sys.exit(main())
