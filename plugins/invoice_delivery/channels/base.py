"""What every channel client shares: its configuration, errors, outcome type and rate limit.

Exceptions::

    GatewayError                 any failure talking to a gateway
    +-- TransientGatewayError    transport error, timeout, 5xx or 429: retry later (retry_after set for 429)
    |   +-- UnansweredError      the request went out but no reply came: the gateway may have taken it
    +-- RejectedError            the gateway refused the message for good (other 4xx): no retry
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Raised when a gateway call fails."""


class TransientGatewayError(GatewayError):
    """Raised for failures worth retrying: transport errors, timeouts, 5xx and 429."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnansweredError(TransientGatewayError):
    """Raised when a request was sent but its reply was lost, so the gateway may have taken the message.

    A send that gets it must not be repeated in place: the next try looks the idempotency key up first.
    """


class RejectedError(GatewayError):
    """Raised when the gateway refuses a message permanently; the delivery fails with this reason."""


@dataclass(frozen=True)
class SendOutcome:
    """The result of offering one message: accepted with the gateway's id, or rejected with a reason."""

    delivery_id: int
    accepted: bool
    message_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    """A gateway's address, credentials and limits, read from its Airflow connection.

    Extras: ``rate_limit_per_s`` (messages per second, 0 = no limit), ``concurrency`` (requests in
    flight), ``timeout_s`` (per request), ``max_attempts`` (tries per request for transient
    failures), and channel-specific keys such as ``tenant_key`` or ``source``.
    """

    base_url: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    rate_limit_per_s: float = 0
    concurrency: int = 8
    timeout_s: float = 10.0
    max_attempts: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_connection(cls, conn: Any) -> GatewayConfig:
        """Build from an Airflow ``Connection`` (host, port, schema as URL scheme, login, password, extras)."""
        extra = dict(conn.extra_dejson or {})
        scheme = extra.pop("scheme", None) or conn.schema or "http"
        if not conn.host:
            raise ValueError(f"connection {conn.conn_id!r} has no host; set the gateway's host and port")
        port = f":{conn.port}" if conn.port else ""
        return cls(
            base_url=f"{scheme}://{conn.host}{port}{extra.pop('base_path', '')}",
            login=conn.login or None,
            password=conn.password or None,
            rate_limit_per_s=float(extra.pop("rate_limit_per_s", 0) or 0),
            concurrency=int(extra.pop("concurrency", 8)),
            timeout_s=float(extra.pop("timeout_s", 10)),
            max_attempts=int(extra.pop("max_attempts", 3)),
            extra=extra,
        )

    @classmethod
    def from_conn_id(cls, conn_id: str) -> GatewayConfig:
        from airflow.sdk import BaseHook

        return cls.from_connection(BaseHook.get_connection(conn_id))


# Seconds at the end of each rate window in which no slot starts, so that a request let go on time
# reaches the gateway within the window whose budget it used.
GUARD_S = 0.1
# Seconds of positions in the past that a late reservation may still take within the current window.
BURST_S = 0.1


@dataclass(frozen=True)
class Slot:
    """A reserved place in a rate window: send at ``start``, and not at or after ``deadline``.

    Both are seconds on the clock the slot was reserved with.
    """

    start: float
    deadline: float


class RateGrid:
    """Slot positions that put at most ``rate`` messages into each calendar second.

    A gateway counts messages per calendar second, so the budget is kept per window: one calendar
    second has ``floor(rate)`` positions, and the fraction of a non-integer rate goes unused. A
    rate under 1 gets one position per window of ``ceil(1 / rate)`` seconds instead. Windows start
    at multiples of their length on the clock given. The positions are spaced evenly over the
    window's first ``window_s - guard_s`` seconds. An acquisition of several messages takes
    consecutive positions in one window, or moves whole to the next window when they do not fit.
    """

    def __init__(self, rate: float, guard_s: float = GUARD_S) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}; use no limiter for no limit")
        if rate >= 1:
            self.window_s = 1.0
            self.budget = math.floor(rate)
        else:
            self.window_s = float(math.ceil(1 / rate - 1e-9))
            self.budget = 1
        if not 0 <= guard_s < self.window_s:
            raise ValueError(f"guard_s must be in [0, {self.window_s:g}) seconds, got {guard_s}")
        self.rate = rate
        self.guard_s = guard_s
        self.step_s = (self.window_s - guard_s) / self.budget
        self.burst_s = min(BURST_S, self.window_s - guard_s)

    def check_count(self, count: int) -> None:
        """Raise ValueError unless ``count`` messages fit into one window."""
        if not 1 <= count <= self.budget:
            raise ValueError(
                f"cannot acquire {count} messages at once at {self.rate:g}/s: one {self.window_s:g}-second window "
                f"has room for 1 to {self.budget}; send smaller batches"
            )

    def reserve(self, next_free: float, now: float, count: int) -> tuple[Slot, float]:
        """Place ``count`` messages at the earliest free positions; return their slot and the new ``next_free``.

        ``next_free`` is the time of the first position no earlier reservation took. ``now``,
        ``next_free`` and the returned times are seconds on the same clock. Positions of the
        current window up to ``burst_s`` in the past may still be taken, so a sender that reserves
        a little late does not lose them. Their slot starts before ``now``.
        """
        self.check_count(count)
        current_window = math.floor(now / self.window_s) * self.window_s
        earliest = max(next_free, now - self.burst_s, current_window)
        window_start = math.floor(earliest / self.window_s) * self.window_s
        # ``next_free`` went through a microsecond timestamp in PostgreSQL, so allow 2 us of
        # rounding before moving to the next position.
        position = max(0, math.ceil((earliest - window_start - 2e-6) / self.step_s))
        deadline = window_start + self.window_s - self.guard_s
        if position + count > self.budget or now >= deadline:
            window_start += self.window_s
            deadline += self.window_s
            position = 0
        slot = Slot(start=window_start + position * self.step_s, deadline=deadline)
        return slot, window_start + (position + count) * self.step_s


class RateLimiter:
    """Keep acquisitions of one process within ``rate`` per calendar second (0 disables the limit).

    The slots come from a :class:`RateGrid` on the wall clock. A caller that wakes up after its
    slot's deadline, late enough that its request could land in the next second, gets a new slot.
    """

    def __init__(self, rate: float) -> None:
        self.grid = RateGrid(rate) if rate > 0 else None
        self._next_free = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, count: int = 1) -> None:
        if self.grid is None:
            return
        self.grid.check_count(count)
        while True:
            async with self._lock:
                slot, self._next_free = self.grid.reserve(self._next_free, time.time(), count)
            wait = slot.start - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.time() < slot.deadline:
                return


def parse_retry_after(value: str | None) -> float | None:
    """Parse Retry-After as seconds or as an HTTP date; return seconds to wait, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def raise_for_status(response: httpx.Response, operation: str) -> None:
    """Translate an HTTP error status into TransientGatewayError or RejectedError."""
    if response.status_code < 400:
        return
    detail = response.text[:300]
    if response.status_code == 429:
        raise TransientGatewayError(
            f"{operation}: throttled (429)", retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )
    if response.status_code >= 500:
        raise TransientGatewayError(f"{operation}: gateway error {response.status_code}: {detail}")
    raise RejectedError(f"{operation}: rejected with {response.status_code}: {detail}")


# Transport errors after which the gateway may have received the request: only the reply is missing.
_MAYBE_RECEIVED = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError,
                   httpx.RemoteProtocolError)


async def call_with_retries(config: GatewayConfig, operation: str, func, *args, retry_unanswered: bool = True,
                            **kwargs):
    """Await ``func`` and retry transient failures with exponential backoff, jitter and Retry-After.

    With ``retry_unanswered=False`` (sends), an error after which the gateway may have taken the
    request is raised at once instead of retried: an :class:`UnansweredError` from ``func``, or an
    httpx read timeout or connection lost mid-request, raised as UnansweredError. The row stays
    claimed and the next try looks the idempotency key up before sending again. Connect errors,
    5xx and 429 are retried in place, since the gateway did not take the message.
    """
    import logging
    import random

    log = logging.getLogger(__name__)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await func(*args, **kwargs)
        except httpx.TimeoutException as exc:
            if isinstance(exc, _MAYBE_RECEIVED):
                error: TransientGatewayError = UnansweredError(f"{operation}: timed out after {config.timeout_s}s")
            else:
                error = TransientGatewayError(f"{operation}: timed out after {config.timeout_s}s")
            error.__cause__ = exc
        except httpx.TransportError as exc:
            error_class = UnansweredError if isinstance(exc, _MAYBE_RECEIVED) else TransientGatewayError
            error = error_class(f"{operation}: transport error: {type(exc).__name__}")
            error.__cause__ = exc
        except TransientGatewayError as exc:
            error = exc
        if not retry_unanswered and isinstance(error, UnansweredError):
            raise error
        if attempt >= config.max_attempts:
            raise error
        backoff = min(30.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random())
        delay = max(backoff, error.retry_after or 0)
        log.warning("%s [Try %d of %d]; retrying in %.1fs", error, attempt, config.max_attempts, delay)
        await asyncio.sleep(delay)


T = TypeVar("T")


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all in parallel; on the first error cancel the others and re-raise it."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def get_each(
    config: GatewayConfig,
    client: httpx.AsyncClient,
    paths: dict[str, str],
    operation: str,
    *,
    check: Callable[[httpx.Response, str], None] | None = None,
    headers: Callable[[], Awaitable[dict[str, str]]] | None = None,
    keep_errors: bool = False,
) -> dict[str, httpx.Response | TransientGatewayError]:
    """GET ``paths[item]`` for every item, ``config.concurrency`` at a time, with retries; return the replies.

    A 404 is a reply, not an error: the gateway does not know the item. ``check(reply, operation)``
    is called on each reply first, to raise GatewayError on rejected credentials. ``headers``
    returns request headers such as a bearer token. With ``keep_errors`` an item whose GET failed
    on every attempt gets its TransientGatewayError as the result, and one warning counts them.
    Without it, the first such error cancels the other GETs and is raised.
    """
    semaphore = asyncio.Semaphore(config.concurrency)

    async def one(item: str, path: str) -> tuple[str, httpx.Response | TransientGatewayError]:
        async with semaphore:
            request_headers = await headers() if headers else None

            async def get() -> httpx.Response:
                response = await client.get(path, headers=request_headers)
                if check:
                    check(response, operation)
                if response.status_code != 404:
                    raise_for_status(response, operation)
                return response

            try:
                return item, await call_with_retries(config, operation, get)
            except TransientGatewayError as exc:
                if not keep_errors:
                    raise
                return item, exc

    replies = dict(await gather_or_cancel(one(item, path) for item, path in paths.items()))
    failed = [reply for reply in replies.values() if isinstance(reply, TransientGatewayError)]
    if failed:
        log.warning(
            "%d of %d %s queries failed after %d attempts (last error: %s); they stay pending",
            len(failed), len(paths), operation, config.max_attempts, failed[-1],
        )
    return replies


def statuses_from(
    replies: dict[str, httpx.Response | TransientGatewayError],
    unknown: str,
    parse: Callable[[Any], tuple[str, str | None]],
) -> dict[str, tuple[str, str | None]]:
    """Turn :func:`get_each` status replies into ``{id: (state, detail)}``.

    A failed query and an id the gateway does not know (404, detail ``unknown``) stay pending, so
    that the delivery expires at its channel's deadline rather than failing on a guess. ``parse``
    reads a found reply's JSON body.
    """
    result: dict[str, tuple[str, str | None]] = {}
    for item, reply in replies.items():
        if isinstance(reply, TransientGatewayError):
            result[item] = ("pending", f"status query failed: {reply}")
        elif reply.status_code == 404:
            result[item] = ("pending", unknown)
        else:
            result[item] = parse(reply.json())
    return result
