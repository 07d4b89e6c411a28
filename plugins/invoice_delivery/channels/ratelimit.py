"""A gateway rate limit shared by every task and worker, kept in PostgreSQL.

The gateway counts accepted messages per calendar second, so the budget is kept per second on a
grid (:class:`~invoice_delivery.channels.base.RateGrid`): each second has ``floor(rate)``
positions, spaced evenly over its first 0.9 s. Each acquisition of ``count`` messages takes the
next ``count`` free positions of one second in a locked transaction on the gateway's row of
``delivery.rate_limit`` and sleeps until the first of them. When they do not fit into the rest of
a second, they move whole to the next one. A reservation may still take positions up to 0.1 s in
the past within the current second, so a sender that reserves a little late loses none. Senders
in any process, on any worker, draw from the same grid, so together they put at most
``floor(rate)`` acquired messages into each second of PostgreSQL's clock.

A request let go on time leaves at least 0.1 s before its second ends (the guard), so latency
below 0.1 s cannot move it into the next second. A sender that wakes up after its slot's deadline
(the start of the guard) leaves the slot unused and reserves a new one.

Per-message acquisitions draw blocks of up to a tenth of a second's worth, so a per-message client
does not pay a database round trip per message.

NOTE: the grid uses PostgreSQL's clock. A gateway on another host counts by its own clock, so
the guarantee is kept only while the two clocks differ by less than the guard, less the request's
latency. A request that is still in flight when the guard runs out (a stalled connection, a
retry that reuses the slot) can still land in the next second.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from invoice_delivery import settings
from invoice_delivery.channels.base import GUARD_S, RateGrid, Slot

log = logging.getLogger(__name__)


class SharedRateLimiter:
    """Keep acquisitions for ``gateway`` within ``rate`` messages per calendar second across all processes."""

    def __init__(self, target: settings.PostgresTarget, gateway: str, rate: float, guard_s: float = GUARD_S) -> None:
        if rate <= 0:
            raise ValueError(f"rate for {gateway} must be positive, got {rate}; use no limiter for no limit")
        self.target = target
        self.gateway = gateway
        self.rate = rate
        self.grid = RateGrid(rate, guard_s)
        self.block = min(self.grid.budget, max(1, int(rate / 10)))
        self.late_slots = 0  # slots given up because the sender woke up after their deadline
        self._block: Slot | None = None  # the local block's slot, in time.monotonic() seconds
        self._left = 0  # messages of the local block not yet let go
        self._next_start = 0.0  # monotonic time of the local block's next position
        self._last_start = 0.0  # monotonic time the previous message of this process was let go
        self._lock = asyncio.Lock()

    def _reserve(self, count: int) -> Slot:
        """Reserve ``count`` positions; return their slot in ``time.monotonic()`` seconds."""
        with psycopg.connect(self.target.conninfo(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO delivery.rate_limit (gateway, next_free) VALUES (%s, clock_timestamp())"
                " ON CONFLICT (gateway) DO NOTHING",
                (self.gateway,),
            )
            with conn.transaction():
                (next_free,) = conn.execute(
                    "SELECT extract(epoch FROM next_free)::float8 FROM delivery.rate_limit WHERE gateway = %s"
                    " FOR UPDATE",
                    (self.gateway,),
                ).fetchone()
                # Read the clock only once the row is locked, since waiting for the lock takes time.
                (now,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
                local_now = time.monotonic()
                slot, next_free = self.grid.reserve(next_free, now, count)
                conn.execute(
                    "UPDATE delivery.rate_limit SET next_free = to_timestamp(%s) WHERE gateway = %s",
                    (next_free, self.gateway),
                )
        offset = local_now - now
        return Slot(start=slot.start + offset, deadline=slot.deadline + offset)

    async def _plan(self, count: int) -> Slot:
        """Return the slot of this acquisition: a new reservation, or the next position of the local block."""
        if count > 1:
            return await asyncio.to_thread(self._reserve, count)
        while True:
            if self._left == 0 or self._block is None:
                self._block = await asyncio.to_thread(self._reserve, self.block)
                self._left = self.block
                self._next_start = self._block.start
            # A late wake-up must not let the following positions catch up in a burst.
            start = max(self._next_start, self._last_start + self.grid.step_s)
            if start < self._block.deadline:
                break
            self._left = 0  # the rest of the block would start too late in its second
        self._left -= 1
        self._next_start += self.grid.step_s
        self._last_start = max(start, time.monotonic())
        return Slot(start=start, deadline=self._block.deadline)

    async def acquire(self, count: int = 1) -> None:
        """Wait until ``count`` messages may be sent; raise ValueError if they do not fit into one window."""
        self.grid.check_count(count)
        while True:
            async with self._lock:
                slot = await self._plan(count)
            wait = slot.start - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() < slot.deadline:
                return
            async with self._lock:
                self.late_slots += 1
                if count == 1 and self._block is not None and self._block.deadline == slot.deadline:
                    self._left = 0  # the block's later positions are later still
            log.debug("Rate limit of %s: woke up %.3f s after the slot's deadline; reserving a new slot",
                      self.gateway, time.monotonic() - slot.deadline)
