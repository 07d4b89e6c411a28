"""A gateway rate limit shared by every task and worker, kept in PostgreSQL.

Each acquisition of ``count`` messages moves the gateway's ``next_free`` time forward by
``count / rate`` seconds in one atomic UPDATE and sleeps until the slot it got begins (the generic
cell rate algorithm). Senders in any process, on any worker, draw from the same schedule, so
together they never exceed the rate. A single acquisition should not exceed one second's worth of
messages, or that second contains more than the rate, so the SMS client sizes its batches to match.

Messages are drawn in blocks of up to a tenth of a second's worth, so a per-message client does
not pay a database round trip per message.

NOTE: the schedule is exact, the sends are not: on a loaded host a process that wakes up late
sends its next messages late rather than in a burst, but two processes can still put a few
messages more than the rate into one second. Configure the limit a little under the gateway's.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from invoice_delivery import settings


class SharedRateLimiter:
    """Space acquisitions for ``gateway`` at ``rate`` messages per second across all processes."""

    def __init__(self, target: settings.PostgresTarget, gateway: str, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate for {gateway} must be positive, got {rate}; use no limiter for no limit")
        self.target = target
        self.gateway = gateway
        self.rate = rate
        self.block = max(1, int(rate / 10))
        self._granted_until = 0.0  # monotonic time until which the local block's slots run
        self._left = 0
        self._last_start = 0.0  # monotonic time the previous message of this process was let go
        self._lock = asyncio.Lock()

    def _reserve(self, count: int) -> float:
        """Reserve ``count`` slots; return how long to wait (seconds) until the first one begins."""
        with psycopg.connect(self.target.conninfo(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO delivery.rate_limit (gateway, next_free) VALUES (%s, clock_timestamp())"
                " ON CONFLICT (gateway) DO NOTHING",
                (self.gateway,),
            )
            start, now = conn.execute(
                "UPDATE delivery.rate_limit SET next_free = greatest(next_free, clock_timestamp())"
                " + %s * interval '1 second' WHERE gateway = %s"
                " RETURNING next_free - %s * interval '1 second', clock_timestamp()",
                (count / self.rate, self.gateway, count / self.rate),
            ).fetchone()
        return max(0.0, (start - now).total_seconds())

    async def acquire(self, count: int = 1) -> None:
        async with self._lock:
            if count == 1 and self._left > 0:
                self._left -= 1
                wait = self._granted_until - (self._left + 1) / self.rate - time.monotonic()
            else:
                size = self.block if count == 1 else count
                wait = await asyncio.to_thread(self._reserve, size)
                self._left = size - 1 if count == 1 else 0
                self._granted_until = time.monotonic() + wait + size / self.rate
            # A late wake-up must not let the following slots catch up in a burst.
            now = time.monotonic()
            start = max(now + wait, self._last_start + 1 / self.rate if count == 1 else now + wait)
            self._last_start = start
        if start > now:
            await asyncio.sleep(start - now)
