"""The shared rate limit holds across processes: two senders together stay under the rate."""

import asyncio
import multiprocessing
import time

import pytest

from invoice_delivery.channels.ratelimit import SharedRateLimiter

RATE = 50.0


def _send(target, count, per_call, out):
    async def run():
        limiter = SharedRateLimiter(target, "test_gateway", RATE)
        stamps = []
        for _ in range(count // per_call):
            await limiter.acquire(per_call)
            stamps.extend([time.time()] * per_call)
        return stamps

    out.extend(asyncio.run(run()))


@pytest.mark.parametrize("per_call", [1, 10])
def test_two_processes_share_the_rate(invoice_db, per_call):
    manager = multiprocessing.Manager()
    stamps = manager.list()
    processes = [multiprocessing.Process(target=_send, args=(invoice_db, 100, per_call, stamps)) for _ in range(2)]

    started = time.time()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)

    times = sorted(stamps)
    assert len(times) == 200
    elapsed = times[-1] - started
    assert elapsed >= (200 - 2 * per_call) / RATE * 0.95, f"200 messages at {RATE}/s went out in {elapsed:.2f}s"
    for start in times:
        in_window = sum(1 for t in times if start <= t < start + 1.0)
        assert in_window <= RATE + per_call, f"{in_window} messages in one second, limit {RATE}"


def test_rate_must_be_positive(invoice_db):
    with pytest.raises(ValueError, match="must be positive"):
        SharedRateLimiter(invoice_db, "gw", 0)
