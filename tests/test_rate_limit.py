"""The rate limiters keep at most the rate in each calendar second, across processes too, as the gateway counts."""

import asyncio
import math
import multiprocessing
import random
import time
from collections import Counter

import pytest

from invoice_delivery.channels.base import RateGrid, RateLimiter
from invoice_delivery.channels.ratelimit import SharedRateLimiter

RATE = 50.0


def _send(target, sizes, out):
    async def run():
        limiter = SharedRateLimiter(target, "test_gateway", RATE)
        stamps = []
        for size in sizes:
            await limiter.acquire(size)
            stamps.extend([time.time()] * size)
        return stamps

    out.extend(asyncio.run(run()))


def _per_second(stamps):
    return Counter(math.floor(stamp) for stamp in stamps)


@pytest.mark.parametrize("sizes", [[1] * 100, [10] * 10, [5, 3, 5, 5, 1, 5, 2, 5] * 4],
                         ids=["single", "tenth of a second", "mixed"])
def test_two_processes_share_the_rate(invoice_db, sizes):
    manager = multiprocessing.Manager()
    stamps = manager.list()
    processes = [multiprocessing.Process(target=_send, args=(invoice_db, sizes, stamps)) for _ in range(2)]

    started = time.time()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)

    times = sorted(stamps)
    total = 2 * sum(sizes)
    assert len(times) == total
    elapsed = times[-1] - started
    assert elapsed >= (total - 2 * max(sizes)) / RATE * 0.95, f"{total} messages at {RATE}/s went out in {elapsed:.2f}s"
    for second, count in sorted(_per_second(times).items()):
        assert count <= RATE, f"{count} messages in second {second}, limit {RATE:g}"


def test_short_chunk_then_full_second(invoice_db):
    # Start early in a second: a short acquisition, then a whole second's worth. Spacing both by
    # count / rate from the first slot's start would put 70 into that second.
    time.sleep(1.1 - time.time() % 1)
    stamps = []

    _send(invoice_db, [20, 50], stamps)

    counts = _per_second(stamps)
    assert sum(counts.values()) == 70
    assert max(counts.values()) <= RATE, f"per second: {dict(counts)}"


def test_late_sender_gets_a_new_slot(invoice_db):
    async def run():
        limiter = SharedRateLimiter(invoice_db, "test_gateway", RATE)
        time.sleep(1.05 - time.time() % 1)
        # A whole second's worth no longer fits into this second, so its slot is the next one.
        acquiring = asyncio.ensure_future(limiter.acquire(50))
        await asyncio.sleep(0.2)
        # Block the event loop past that slot's deadline, as a busy process would.
        time.sleep(1.95 - time.time() % 1)
        await acquiring
        return limiter.late_slots, time.time()

    late_slots, released = asyncio.run(run())

    assert late_slots == 1
    assert released % 1 < 0.9, f"released {released % 1:.3f} s into its second, inside the guard"


def test_grid_never_exceeds_budget():
    rng = random.Random(7)
    grid = RateGrid(200)
    now, next_free = 1_000.0, 0.0
    per_second: Counter[int] = Counter()
    for _ in range(5_000):
        count = rng.choice([1, 7, 20, 20, 20, 13])
        slot, next_free = grid.reserve(next_free, now, count)
        assert math.floor(slot.start) == math.floor(slot.deadline)
        assert slot.deadline - math.floor(slot.deadline) == pytest.approx(0.9)
        assert slot.start < slot.deadline
        assert slot.start >= now - grid.burst_s
        per_second[math.floor(slot.start)] += count
        now = max(now, slot.start) + rng.choice([0.0, 0.0, 0.01, 0.05, 0.3])
    assert max(per_second.values()) <= 200


def test_grid_fills_a_second_without_gaps():
    grid = RateGrid(200)
    next_free = 0.0
    starts = []
    for _ in range(20):
        slot, next_free = grid.reserve(next_free, 1_000.0, 20)
        starts.append(slot.start)

    assert starts[:10] == pytest.approx([1_000.0 + 0.09 * i for i in range(10)])
    assert starts[10:] == pytest.approx([1_001.0 + 0.09 * i for i in range(10)])


def test_grid_moves_chunk_that_does_not_fit():
    grid = RateGrid(50)

    first, next_free = grid.reserve(0.0, 1_000.1, 20)
    second, _ = grid.reserve(next_free, 1_000.1, 50)

    assert math.floor(first.start) == 1_000
    assert second.start == pytest.approx(1_001.0)


def test_grid_rate_below_one():
    grid = RateGrid(0.4)

    slot, next_free = grid.reserve(0.0, 1_000.5, 1)
    again, _ = grid.reserve(next_free, 1_000.5, 1)

    assert (grid.window_s, grid.budget) == (3.0, 1)
    assert slot.start == pytest.approx(1_002.0)
    assert again.start == pytest.approx(1_005.0)


def test_acquire_more_than_a_second_raises():
    with pytest.raises(ValueError, match="has room for 1 to 50"):
        asyncio.run(RateLimiter(RATE).acquire(51))


def test_local_limiter_keeps_calendar_seconds():
    async def run():
        limiter = RateLimiter(RATE)
        stamps = []
        for size in [5, 3, 5, 5, 1, 5, 2, 5] * 4:
            await limiter.acquire(size)
            stamps.extend([time.time()] * size)
        return stamps

    counts = _per_second(asyncio.run(run()))

    assert sum(counts.values()) == 124
    assert max(counts.values()) <= RATE, f"per second: {dict(counts)}"


def test_rate_must_be_positive(invoice_db):
    with pytest.raises(ValueError, match="must be positive"):
        SharedRateLimiter(invoice_db, "gw", 0)
