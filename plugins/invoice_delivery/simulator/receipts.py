"""Schedule gateway receipts and POST them, signed, to each channel's receipt URL.

A channel schedules a receipt with a ``fire`` callback. When the receipt falls due, the callback
updates the message's status and returns the receipt payload. The payload is serialised once,
signed with the channel's webhook secret (see :mod:`invoice_delivery.webhooks`) and POSTed to the
channel's receipt URL. A receiver that responds with anything but 2xx, or cannot be reached, gets the
receipt again after ``retry_backoff_s``, doubling each time, up to ``max_attempts`` POSTs, with
the same ``webhook-id`` and a fresh timestamp. A channel without a receipt URL keeps its due
receipts, signed, in an outbox that ``GET /_sim/receipts`` lists.

Faults per channel may lose a receipt (its message status still changes), send it twice with the
same ``webhook-id``, delay it by a random extra time, which reorders receipts, or send it early.
An early receipt is due at once, and the reply to the send request that scheduled it waits until
the receipt's first POST has finished. Only receipts scheduled inside
:meth:`ReceiptScheduler.early_receipts_before_reply` can be early.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx

from invoice_delivery import webhooks
from invoice_delivery.simulator.config import ReceiptConfig
from invoice_delivery.simulator.faults import FaultInjector
from invoice_delivery.simulator.state import SimulatorState

log = logging.getLogger(__name__)

MAX_CONCURRENT_POSTS = 32
FAILURE_LOG_INTERVAL_S = 10.0
DUPLICATE_GAP_S = 0.05

# Futures of the early receipts that the current send request scheduled; None outside such a request.
_early_receipt_gates: ContextVar[list[asyncio.Future[None]] | None] = ContextVar("early_receipt_gates", default=None)


@dataclass(slots=True)
class Receipt:
    """One receipt's content and id, both created when it first falls due."""

    channel: str
    fire: Callable[[], dict[str, Any]] | None
    webhook_id: str | None = None
    payload: dict[str, Any] | None = None
    body: bytes | None = None

    def materialise(self) -> bytes:
        """Call ``fire`` once, assign the ``webhook-id`` and return the serialised payload."""
        if self.body is None:
            fire, self.fire = self.fire, None
            self.payload = fire() if fire is not None else {}
            self.body = json.dumps(self.payload, separators=(",", ":")).encode()
            self.webhook_id = webhooks.new_webhook_id()
        return self.body


@dataclass(slots=True)
class Delivery:
    """One copy of a receipt on its way to the receiver; a duplicated receipt has two."""

    receipt: Receipt
    copy: int
    lost: bool
    due_at: float
    generation: int
    status: str = "scheduled"
    attempts: int = 0
    last_error: str | None = None
    headers: dict[str, str] | None = None
    finished_at: float | None = None
    early: bool = False
    reply_gate: asyncio.Future[None] | None = None

    def open_reply_gate(self) -> None:
        """Release the reply of the send request that waits for this early receipt."""
        if self.reply_gate is not None and not self.reply_gate.done():
            self.reply_gate.set_result(None)

    def to_json(self) -> dict[str, Any]:
        """Return the delivery as ``GET /_sim/receipts`` lists it."""
        receipt = self.receipt
        return {
            "channel": receipt.channel,
            "webhook_id": receipt.webhook_id,
            "copy": self.copy,
            "early": self.early,
            "status": self.status,
            "due_at": self.due_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "payload": receipt.payload,
            "body": receipt.body.decode() if receipt.body is not None else None,
            "headers": self.headers,
        }


@dataclass
class _ChannelReceipts:
    config: ReceiptConfig
    secret: str
    deliveries: list[Delivery] = field(default_factory=list)
    failures_since_log: int = 0
    last_failure_log: float = float("-inf")


class ReceiptScheduler:
    """Timer heap of due receipts, the background task that sends them, and the outbox."""

    def __init__(self, state: SimulatorState, faults: FaultInjector) -> None:
        self._state = state
        self._faults = faults
        self._channels: dict[str, _ChannelReceipts] = {}
        self._heap: list[tuple[float, int, Delivery]] = []
        self._sequence = itertools.count()
        self._generation = 0
        self._wakeup = asyncio.Event()
        self._posts: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._post_slots: asyncio.Semaphore | None = None

    def register(self, channel: str, config: ReceiptConfig, secret: str) -> None:
        """Declare that ``channel`` sends receipts with this configuration and signing secret."""
        webhooks.signing_key(secret)
        self._channels[channel] = _ChannelReceipts(config=config, secret=secret)

    def config(self, channel: str) -> ReceiptConfig:
        return self._channels[channel].config

    async def start(self) -> None:
        """Open the HTTP client and start the background task."""
        # trust_env=False: receipts go to loopback, never through a proxy taken from the environment.
        self._client = httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=MAX_CONCURRENT_POSTS))
        self._post_slots = asyncio.Semaphore(MAX_CONCURRENT_POSTS)
        self._runner = asyncio.create_task(self._run(), name="receipt-scheduler")

    async def stop(self) -> None:
        """Cancel the background task and pending POSTs, and close the HTTP client."""
        tasks = [task for task in (self._runner, *self._posts) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def reset(self) -> None:
        """Drop every scheduled receipt and the outbox, then wait for the POSTs in flight.

        Waiting (up to the longest POST timeout) means that no receipt scheduled before the
        reset reaches a receiver after it. Those POSTs are not recorded.
        """
        self._generation += 1
        self._heap.clear()
        for channel in self._channels.values():
            for delivery in channel.deliveries:
                delivery.open_reply_gate()
            channel.deliveries = []
            channel.failures_since_log = 0
        in_flight = set(self._posts)
        if in_flight:
            timeout = max(channel.config.timeout_s for channel in self._channels.values())
            _, pending = await asyncio.wait(in_flight, timeout=timeout)
            for task in pending:
                task.cancel()

    @asynccontextmanager
    async def early_receipts_before_reply(self) -> AsyncIterator[None]:
        """Wrap the processing of a send request, so that its early receipts precede the reply.

        On leaving the block without an error, wait until each early receipt scheduled inside
        it has finished its first POST (delivered or not), reached the outbox or been dropped.
        The wait ends after the longest receipt POST timeout plus one second in any case.
        """
        gates: list[asyncio.Future[None]] = []
        token = _early_receipt_gates.set(gates)
        try:
            yield
        finally:
            _early_receipt_gates.reset(token)
        if gates:
            timeout = max(channel.config.timeout_s for channel in self._channels.values()) + 1
            await asyncio.wait(gates, timeout=timeout)

    def schedule(
        self,
        channel: str,
        fire: Callable[[], dict[str, Any]],
        delay_s: float | None = None,
        *,
        may_arrive_early: bool = True,
    ) -> None:
        """Schedule one receipt of ``channel`` after ``delay_s`` (default: the channel's delay).

        ``may_arrive_early`` is false for receipts that report a later status change, such as
        a final status after an acknowledgement: the early fault never applies to them.
        """
        receipts = self._channels[channel]
        stats = self._state.channel(channel).stats
        plan = self._faults.receipt_plan(channel)
        gates = _early_receipt_gates.get()
        early = plan.early and may_arrive_early and gates is not None and not plan.lost
        if early:
            delay = 0.0
        else:
            delay = (receipts.config.delay_s if delay_s is None else delay_s) + plan.extra_delay_s
        now = time.time()

        receipt = Receipt(channel=channel, fire=fire)
        stats.receipts["scheduled"] += 1
        if plan.lost:
            stats.faults_injected["receipt_lost"] += 1
        first = Delivery(receipt, 1, plan.lost, now + delay, self._generation, early=early)
        if early and gates is not None:
            stats.faults_injected["receipt_early"] += 1
            first.reply_gate = asyncio.get_running_loop().create_future()
            gates.append(first.reply_gate)
        self._push(receipts, first, delay)
        if plan.duplicate and not plan.lost:
            stats.faults_injected["receipt_duplicate"] += 1
            duplicate_delay = delay + DUPLICATE_GAP_S
            copy = Delivery(receipt, 2, False, now + duplicate_delay, self._generation)
            self._push(receipts, copy, duplicate_delay)

    def deliveries(self, channel: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Return the receipts of one channel (or all), optionally only those with ``status``."""
        names = [channel] if channel is not None else list(self._channels)
        return [
            delivery.to_json()
            for name in names
            for delivery in self._channels[name].deliveries
            if status is None or delivery.status == status
        ]

    def _push(self, receipts: _ChannelReceipts, delivery: Delivery, delay_s: float) -> None:
        receipts.deliveries.append(delivery)
        self._requeue(delivery, delay_s)

    def _requeue(self, delivery: Delivery, delay_s: float) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._sequence), delivery))
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                _, _, delivery = heapq.heappop(self._heap)
                self._dispatch(delivery)
            timeout = self._heap[0][0] - now if self._heap else None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    def _dispatch(self, delivery: Delivery) -> None:
        receipts = self._channels[delivery.receipt.channel]
        stats = self._state.channel(delivery.receipt.channel).stats
        try:
            delivery.receipt.materialise()
        except Exception:
            log.exception("Building a %s receipt failed; it is dropped", delivery.receipt.channel)
            delivery.status = "failed"
            delivery.last_error = "building the receipt payload failed; see the simulator log"
            stats.receipts["failed"] += 1
            delivery.open_reply_gate()
            return
        if delivery.lost:
            delivery.status = "lost"
            stats.receipts["lost"] += 1
            delivery.open_reply_gate()
            return
        if receipts.config.url is None:
            delivery.headers = webhooks.signed_headers(
                receipts.secret, delivery.receipt.body or b"", delivery.receipt.webhook_id
            )
            delivery.status = "outbox"
            delivery.finished_at = time.time()
            stats.receipts["outbox"] += 1
            delivery.open_reply_gate()
            return
        task = asyncio.create_task(self._post(delivery, receipts))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _post(self, delivery: Delivery, receipts: _ChannelReceipts) -> None:
        assert self._client is not None and self._post_slots is not None
        delivery.status = "sending"
        async with self._post_slots:
            if delivery.generation != self._generation:
                delivery.open_reply_gate()
                return
            # Sign when the POST starts, so that a wait for a free slot does not age the timestamp.
            receipt = delivery.receipt
            body = receipt.body or b""
            headers = webhooks.signed_headers(receipts.secret, body, receipt.webhook_id)
            headers["content-type"] = "application/json"
            delivery.attempts += 1
            error = await self._send(receipts.config, body, headers)
        delivery.open_reply_gate()
        if delivery.generation != self._generation:
            return
        delivery.headers = headers
        self._finish(delivery, receipts, error)

    async def _send(self, config: ReceiptConfig, body: bytes, headers: dict[str, str]) -> str | None:
        """POST one receipt and return None on a 2xx response, else the error."""
        assert self._client is not None
        try:
            response = await self._client.post(
                config.url or "", content=body, headers=headers, timeout=config.timeout_s
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not response.is_success:
            return f"receiver responded with HTTP {response.status_code}"
        return None

    def _finish(self, delivery: Delivery, receipts: _ChannelReceipts, error: str | None) -> None:
        stats = self._state.channel(delivery.receipt.channel).stats
        if error is None:
            delivery.status = "delivered"
            delivery.finished_at = time.time()
            stats.receipts["delivered"] += 1
            return
        delivery.last_error = error
        if delivery.attempts < receipts.config.max_attempts:
            delivery.status = "retrying"
            stats.receipts["retried"] += 1
            self._requeue(delivery, receipts.config.retry_backoff_s * 2 ** (delivery.attempts - 1))
            return
        delivery.status = "failed"
        delivery.finished_at = time.time()
        stats.receipts["failed"] += 1
        self._log_failure(delivery, receipts)

    def _log_failure(self, delivery: Delivery, receipts: _ChannelReceipts) -> None:
        """Log a receipt that was given up, at most once per interval per channel.

        The message counts the receipts given up since the previous message.
        """
        receipts.failures_since_log += 1
        now = time.monotonic()
        if now - receipts.last_failure_log < FAILURE_LOG_INTERVAL_S:
            return
        log.warning(
            "Gave up on %s receipt %s after %d attempts (%s); %d given up since the previous warning",
            delivery.receipt.channel,
            delivery.receipt.webhook_id,
            delivery.attempts,
            delivery.last_error,
            receipts.failures_since_log,
        )
        receipts.failures_since_log = 0
        receipts.last_failure_log = now
