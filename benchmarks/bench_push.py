"""Measure the push client alone: N notifications to the gateway simulator, one request each.

``python -m benchmarks.bench_push [--messages 3000] [--concurrency 16]`` starts the simulator on a
free port of 127.0.0.1, sends the messages with :class:`invoice_delivery.channels.push.PushClient`
(no rate limit) and prints the wall and CPU seconds of the sending process and the sends per second.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time

from benchmarks.common import exit_on_sigterm, free_port, gateway_config
from invoice_delivery import devenv
from invoice_delivery.channels.push import PushClient, PushMessage
from invoice_delivery.simulator.process import SimulatorProcess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="notifications to send (default 3000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1:
        parser.error(f"--messages and --concurrency must be at least 1, got {args.messages} and {args.concurrency}")
    exit_on_sigterm()

    sim_port, smtp_port = free_port(), free_port()
    with SimulatorProcess(sim_port, smtp_port=smtp_port):
        connections = devenv.gateway_connections(sim_port, smtp_port=smtp_port)
        config = gateway_config("push_gateway", connections["AIRFLOW_CONN_PUSH_GATEWAY"])
        client = PushClient(dataclasses.replace(config, concurrency=args.concurrency, rate_limit_per_s=0))
        payload = json.dumps({"title": "Invoice", "body": "Your invoice of 123.00 SEK is due on 31 December",
                              "data": {"invoice": "1"}}).encode()
        messages = [PushMessage(i, f"bench-push-{i}", f"installation-{i}", payload) for i in range(args.messages)]
        wall, cpu = time.perf_counter(), time.process_time()
        outcomes = asyncio.run(client.send(messages))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    accepted = sum(1 for outcome in outcomes if outcome.accepted)
    print(f"push: {args.messages} messages, concurrency {args.concurrency}: {accepted} accepted in {wall:.2f} s "
          f"wall, {cpu:.2f} s CPU of the sending process")
    print(f"push_sends_per_s: {args.messages / wall:.0f}")
    return 0 if accepted == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
