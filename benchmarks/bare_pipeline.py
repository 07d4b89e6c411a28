"""Run extract, validate, route, render and send in one process, without Airflow, and time each stage.

``python -m benchmarks.bare_pipeline --batch-size 50000 [--profile STAGE] [--stop-after STAGE]
[--max-batches N] [--pdf-timing]`` reads the invoice database from ``AIRFLOW_CONN_INVOICE_DB``, the gateways from
``AIRFLOW_CONN_<CHANNEL>_GATEWAY`` and the enabled channels from ``INVOICE_DELIVERY_CHANNELS``, the
same variables the DAG's tasks read. It prints one JSON object as its last line: per stage the
wall seconds, CPU seconds of this process and the number of invoices or messages handled, and the
peak resident memory of the process.

``record`` is not a separate pass: it is the time spent inside the ledger functions
(``ledger.transition``, ``ledger.record_events``, ``ledger.set_document_status``) during the other
stages, and is part of their times too.

With ``--profile STAGE`` the stage runs under cProfile for the first batch only, and the
statistics go to ``--profile-output``. ``--stop-after`` ends the run after that stage, and
``--pdf-timing`` also reports the wall and CPU seconds spent in ``Renderer.mailbox`` and
``Renderer.paper``, whose work is almost all PDF rendering.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import resource
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STAGES = ("extract", "validate", "route", "render", "send")


class StageClock:
    """Accumulate wall and CPU seconds per name; nested timing of the same name counts once."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            self._depth[name] += 1
            outer = self._depth[name] == 1
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                self._depth[name] -= 1
                if outer:
                    self.wall[name] += time.perf_counter() - wall
                    self.cpu[name] += time.process_time() - cpu
                    self.calls[name] += 1

        return timed


def instrument_ledger(clock: StageClock) -> None:
    """Time every ledger write as the pseudo-stage ``record``; the modules call them as ``ledger.X``."""
    from invoice_delivery import ledger

    for name in ("transition", "record_events", "set_document_status"):
        setattr(ledger, name, clock.wrap("record", getattr(ledger, name)))


def instrument_pdfs(clock: StageClock) -> None:
    from invoice_delivery.rendering.render import Renderer

    Renderer.mailbox = clock.wrap("pdf_mailbox", Renderer.mailbox)
    Renderer.paper = clock.wrap("pdf_paper", Renderer.paper)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_counts(conn) -> dict[str, int]:
    """Count what each stage produced, from the ledger."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM delivery.document) AS extract,"
        " (SELECT coalesce(sum(validated), 0) FROM delivery.validation_result) AS validate,"
        " (SELECT count(*) FROM delivery.document WHERE status NOT IN ('extracted', 'quarantined')) AS route,"
        " (SELECT count(*) FROM delivery.delivery WHERE content_hash IS NOT NULL) AS render,"
        " (SELECT count(*) FROM delivery.delivery WHERE state IN ('accepted', 'delivered')) AS send"
    ).fetchone()
    counts = {name: int(row[name]) for name in STAGES}
    counts["record"] = conn.execute("SELECT count(*) AS n FROM delivery.audit_event").fetchone()["n"]
    return counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.common import build_clients
    from invoice_delivery import db, settings
    from invoice_delivery.channels import enabled_channels
    from invoice_delivery.context import RunContext
    from invoice_delivery.extract import extract_window
    from invoice_delivery.rendering import render_batch
    from invoice_delivery.routing import route_batch
    from invoice_delivery.send import send_batch
    from invoice_delivery.validation import validate_batch

    clock = StageClock()
    instrument_ledger(clock)
    if args.pdf_timing:
        instrument_pdfs(clock)
    target = settings.invoice_db_target()
    enabled = enabled_channels()
    clients = build_clients(enabled, target)
    run_id = f"bare__{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}"

    def ctx(task_id: str) -> RunContext:
        return RunContext(dag_id="bench_bare", run_id=run_id, task_id=task_id)

    matcher = None
    if "mailbox" in enabled:
        mailbox = clients["mailbox"]

        def matcher(numbers: list[str]) -> set[str]:
            return asyncio.run(mailbox.match(numbers))

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()

    def step(stage: str, batch_index: int, func, *call_args, **call_kwargs):
        profiled = profiler is not None and stage == args.profile and batch_index == 0
        if profiled:
            profiler.enable()
        try:
            return clock.wrap(stage, func)(*call_args, **call_kwargs)
        finally:
            if profiled:
                profiler.disable()

    wall_started = time.perf_counter()
    with db.connect(target) as conn:
        end = datetime.now(UTC)
        batch_ids = step("extract", 0, extract_window, conn, ctx("extract"), end - timedelta(minutes=5), end,
                         batch_size=args.batch_size)
        conn.commit()
        if args.max_batches:
            batch_ids = batch_ids[: args.max_batches]
        stages = list(STAGES[1 : STAGES.index(args.stop_after) + 1])
        for stage in stages:
            for index, batch_id in enumerate(batch_ids):
                if stage == "validate":
                    step(stage, index, validate_batch, conn, ctx("validate"), batch_id)
                elif stage == "route":
                    step(stage, index, route_batch, conn, ctx("process.route"), batch_id, enabled=enabled,
                         mailbox_matcher=matcher)
                elif stage == "render":
                    step(stage, index, render_batch, conn, ctx("process.render"), batch_id)
                else:
                    step(stage, index, send_batch, conn, ctx("process.send"), batch_id, clients)
                conn.commit()
        total_wall = time.perf_counter() - wall_started
        counts = stage_counts(conn)

    if profiler is not None and args.profile_output:
        profiler.dump_stats(str(args.profile_output))
    names = [*STAGES, "record"] + (["pdf_mailbox", "pdf_paper"] if args.pdf_timing else [])
    return {
        "batches": len(batch_ids),
        "stages": {name: {"wall_s": clock.wall.get(name, 0.0), "cpu_s": clock.cpu.get(name, 0.0),
                          "calls": clock.calls.get(name, 0), "count": counts.get(name)} for name in names},
        "total_wall_s": total_wall,
        "peak_rss_mb": peak_rss_mb(),
        "channels": list(enabled),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=50_000, help="invoices per batch (default 50000)")
    parser.add_argument("--profile", choices=STAGES, help="run this stage's first batch under cProfile")
    parser.add_argument("--profile-output", type=Path, help="file for the cProfile statistics")
    parser.add_argument("--stop-after", choices=STAGES, default="send", help="last stage to run (default send)")
    parser.add_argument("--max-batches", type=int, default=0,
                        help="run the stages after extract on the first this many batches only (default 0: all)")
    parser.add_argument("--pdf-timing", action="store_true",
                        help="report the wall and CPU seconds of rendering mailbox and paper documents")
    args = parser.parse_args(argv)
    if args.max_batches < 0:
        parser.error(f"--max-batches must be 0 (all) or more, got {args.max_batches}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
