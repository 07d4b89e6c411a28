"""Decide and apply the faults configured per channel: latency, 429, 5xx, timeouts, rejections.

Each channel draws from its own ``random.Random`` seeded from the configured seed and the
channel name, so a run with the same configuration and the same requests injects the same
faults. A request that gets a 429, a 5xx or a timeout raises :class:`InjectedFault` before the
channel records anything, so the client's retry is not a duplicate. The exception is a timeout
with ``timeout_after_accept``: the channel records the message first and the reply is held
afterwards. ``max_request_faults`` stops the 429, 5xx and timeout faults of a channel after that
many, so that a test can fail the first request and let the retry pass.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Literal

from fastapi.responses import JSONResponse

from invoice_delivery.simulator.config import CHANNELS, FaultConfig, SimulatorConfig
from invoice_delivery.simulator.state import ChannelStats

# (HTTP status, fault kind, message) -> JSON body in the channel's own error shape.
ErrorRenderer = Callable[[int, str, str], dict[str, Any]]
RouteKind = Literal["send", "other"]
Rejection = Literal["reject", "block"]


class InjectedFault(Exception):
    """Raised inside a route; the app sends the injected error response that it carries."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True, slots=True)
class ReceiptPlan:
    """Fate of one receipt: lost, sent twice, extra delay in seconds, sent before the send's reply."""

    lost: bool = False
    duplicate: bool = False
    extra_delay_s: float = 0.0
    early: bool = False


NO_RECEIPT_FAULT = ReceiptPlan()


class FaultInjector:
    """Current fault configuration per channel and the seeded random draws that apply it."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._seed = config.seed
        self._initial = {channel: config.faults_for(channel) for channel in CHANNELS}
        self.reset()

    def reset(self) -> None:
        """Restore the configured faults and restart every random sequence from the seed."""
        self._faults: dict[str, FaultConfig] = dict(self._initial)
        self._request_rngs = {channel: random.Random(f"{self._seed}:{channel}:faults") for channel in CHANNELS}
        self._receipt_rngs = {channel: random.Random(f"{self._seed}:{channel}:receipts") for channel in CHANNELS}
        self._rejections = {channel: _rejection_map(self._faults[channel]) for channel in CHANNELS}
        self._request_faults = dict.fromkeys(CHANNELS, 0)

    def get(self, channel: str) -> FaultConfig:
        return self._faults[channel]

    def set(self, channel: str, faults: FaultConfig) -> None:
        """Replace one channel's faults; fields left out of ``faults`` are back to no fault."""
        self._faults[channel] = faults
        self._rejections[channel] = _rejection_map(faults)
        self._request_faults[channel] = 0

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {channel: faults.model_dump() for channel, faults in self._faults.items()}

    async def before_request(
        self,
        channel: str,
        stats: ChannelStats,
        route: RouteKind,
        render_error: ErrorRenderer,
    ) -> float:
        """Apply latency and draw a fault for one request.

        Returns the seconds to hold the reply after the message is recorded (0 unless a
        ``timeout_after_accept`` timeout was drawn).

        Raises:
            InjectedFault: the request gets a 429, a 5xx or a timeout before acceptance.
        """
        faults = self._faults[channel]
        if route != "send" and faults.scope != "all":
            return 0.0
        if faults.latency_ms:
            stats.faults_injected["latency"] += 1
            await asyncio.sleep(faults.latency_ms / 1000)

        draw = self._request_rngs[channel].random()
        limit = faults.max_request_faults
        if limit is not None and self._request_faults[channel] >= limit:
            return 0.0
        if draw < faults.rate_429 + faults.error_5xx_rate + faults.timeout_rate:
            self._request_faults[channel] += 1
        if draw < faults.rate_429:
            stats.faults_injected["rate_429"] += 1
            raise InjectedFault(_too_many_requests(faults, render_error))
        draw -= faults.rate_429
        if draw < faults.error_5xx_rate:
            stats.faults_injected["error_5xx"] += 1
            message = "injected server error; retry later"
            body = render_error(faults.error_5xx_status, "error_5xx", message)
            raise InjectedFault(JSONResponse(body, status_code=faults.error_5xx_status))
        draw -= faults.error_5xx_rate
        if draw < faults.timeout_rate:
            stats.faults_injected["timeout"] += 1
            if faults.timeout_after_accept:
                return faults.timeout_hold_s
            await asyncio.sleep(faults.timeout_hold_s)
            message = f"injected timeout: the request was held {faults.timeout_hold_s:g} s and not processed"
            raise InjectedFault(JSONResponse(render_error(504, "timeout", message), status_code=504))
        return 0.0

    async def after_accept(self, hold_s: float) -> None:
        """Hold the reply of a request whose message is already recorded."""
        if hold_s > 0:
            await asyncio.sleep(hold_s)

    def rejection(self, channel: str, recipient: str) -> Rejection | None:
        """Return how the configured faults reject this recipient, or None."""
        return self._rejections[channel].get(recipient)

    def receipt_plan(self, channel: str) -> ReceiptPlan:
        """Draw whether one receipt is lost, duplicated, delayed further or sent before the reply."""
        faults = self._faults[channel]
        if not (
            faults.receipt_loss_rate
            or faults.receipt_duplicate_rate
            or faults.receipt_jitter_s
            or faults.receipt_early_rate
        ):
            return NO_RECEIPT_FAULT
        rng = self._receipt_rngs[channel]
        lost = rng.random() < faults.receipt_loss_rate
        duplicate = rng.random() < faults.receipt_duplicate_rate
        extra_delay_s = rng.uniform(0, faults.receipt_jitter_s)
        # Drawn last and only when configured, so that the other draws keep their sequence.
        early = bool(faults.receipt_early_rate) and rng.random() < faults.receipt_early_rate
        return ReceiptPlan(lost=lost, duplicate=duplicate, extra_delay_s=extra_delay_s, early=early)


def _rejection_map(faults: FaultConfig) -> dict[str, Rejection]:
    rejections: dict[str, Rejection] = {recipient: "block" for recipient in faults.block_recipients}
    rejections.update({recipient: "reject" for recipient in faults.reject_recipients})
    return rejections


def _too_many_requests(faults: FaultConfig, render_error: ErrorRenderer) -> JSONResponse:
    if faults.retry_after_format == "http-date":
        # Round up to a whole second, so that the date is at least retry_after seconds from now.
        retry_after = formatdate(math.ceil(time.time()) + faults.retry_after, usegmt=True)
    else:
        retry_after = str(faults.retry_after)
    message = f"injected rate limit; retry after {faults.retry_after} s"
    return JSONResponse(
        render_error(429, "rate_429", message),
        status_code=429,
        headers={"Retry-After": retry_after},
    )
