"""Send one batch in its own process, as one try of Airflow's mapped ``send`` task would.

Run as ``python -m benchmarks.send_worker --batch ID --run-id RUN --try N``. The invoice database
comes from ``AIRFLOW_CONN_INVOICE_DB`` and the gateways from ``AIRFLOW_CONN_<CHANNEL>_GATEWAY``
(JSON form), the same variables the Airflow deployment reads. The clients are built from those
values without Airflow, the way ``invoice_delivery.tasks.client_for`` builds them.

Exit status: 0 when the batch was sent, 75 (EX_TEMPFAIL) when some messages stayed unresolved
(the task would fail and Airflow would retry it), 1 on any other error. The last line of
standard output is the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

EXIT_RETRY = 75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, required=True, help="delivery.batch id to send")
    parser.add_argument("--run-id", required=True, help="run id written to the audit trail")
    parser.add_argument("--dag-id", default="bench_faults", help="DAG id written to the audit trail")
    parser.add_argument("--try", dest="try_number", type=int, default=1, help="try number, starting at 1")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from benchmarks.common import build_clients
    from invoice_delivery import db, settings
    from invoice_delivery.channels import TransientGatewayError, enabled_channels
    from invoice_delivery.context import RunContext
    from invoice_delivery.send import send_batch

    target = settings.invoice_db_target()
    ctx = RunContext(dag_id=args.dag_id, run_id=args.run_id, task_id="process.send", try_number=args.try_number)
    clients = build_clients(enabled_channels(), target)
    try:
        with db.connect(target) as conn:
            counts = send_batch(conn, ctx, args.batch, clients)
    except TransientGatewayError as exc:
        logging.getLogger(__name__).warning("Batch %s try %s left messages unresolved: %s",
                                            args.batch, args.try_number, exc)
        print(json.dumps({"batch_id": args.batch, "unresolved": True}))
        return EXIT_RETRY
    print(json.dumps({"batch_id": args.batch, **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
