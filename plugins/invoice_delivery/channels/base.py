"""What every channel client shares: its configuration, errors, outcome type and rate limit.

Exceptions::

    GatewayError                 any failure talking to a gateway
    +-- TransientGatewayError    transport error, timeout, 5xx or 429: retry later (retry_after set for 429)
    +-- RejectedError            the gateway refused the message for good (other 4xx): no retry
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx


class GatewayError(Exception):
    """Raised when a gateway call fails."""


class TransientGatewayError(GatewayError):
    """Raised for failures worth retrying: transport errors, timeouts, 5xx and 429."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


class RateLimiter:
    """Space out acquisitions so at most ``rate`` happen per second (0 disables the limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, count: int = 1) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval * count
        if wait > 0:
            await asyncio.sleep(wait)


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
    request (a read timeout, a connection lost mid-request) is raised at once instead of retried:
    the row stays claimed and the next try looks the idempotency key up before sending again.
    Connect errors, 5xx and 429 are retried in place, since the gateway did not take the message.
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
            error: TransientGatewayError = TransientGatewayError(f"{operation}: timed out after {config.timeout_s}s")
            error.__cause__ = exc
            if not retry_unanswered and isinstance(exc, _MAYBE_RECEIVED):
                raise error from exc
        except httpx.TransportError as exc:
            error = TransientGatewayError(f"{operation}: transport error: {type(exc).__name__}")
            error.__cause__ = exc
            if not retry_unanswered and isinstance(exc, _MAYBE_RECEIVED):
                raise error from exc
        except TransientGatewayError as exc:
            error = exc
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
