"""Bundle what every channel router shares: configuration, store, faults, receipts, auth helpers."""

from __future__ import annotations

import base64
import binascii
import hmac
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse

from invoice_delivery.simulator.config import SimulatorConfig
from invoice_delivery.simulator.faults import FaultInjector
from invoice_delivery.simulator.receipts import ReceiptScheduler
from invoice_delivery.simulator.state import SimulatorState


class Service(Protocol):
    """A server that runs beside the HTTP application, such as the SMTP server."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class SimulatorContext:
    """Shared objects of one running simulator."""

    config: SimulatorConfig
    state: SimulatorState
    faults: FaultInjector
    receipts: ReceiptScheduler
    services: list[Service] = field(default_factory=list)
    _outcome_rngs: dict[str, random.Random] = field(default_factory=dict)

    def outcome_rng(self, channel: str) -> random.Random:
        """Return the channel's seeded generator for delivery outcomes (delivered, failed, paper)."""
        rng = self._outcome_rngs.get(channel)
        if rng is None:
            rng = self._outcome_rngs[channel] = random.Random(f"{self.config.seed}:{channel}:outcomes")
        return rng

    async def reset(self) -> None:
        """Forget receipts, messages and counters, and restore the configured faults and seeds."""
        await self.receipts.reset()
        self.state.reset()
        self.faults.reset()
        self._outcome_rngs.clear()


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """Return the user and password of an HTTP basic ``Authorization`` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    if not separator:
        return None
    return user, password


def credentials_match(offered: tuple[str, str] | None, user: str, password: str) -> bool:
    """Compare offered basic credentials with the expected pair in constant time."""
    if offered is None:
        return False
    user_ok = hmac.compare_digest(offered[0].encode(), user.encode())
    password_ok = hmac.compare_digest(offered[1].encode(), password.encode())
    return user_ok and password_ok


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """Return the ``{"code", "message"[, "field"]}`` error body that most channel routes use."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def iso_timestamp(unix_time: float) -> str:
    """Format Unix time as UTC ISO 8601 with milliseconds, e.g. ``2025-01-31T09:30:00.123Z``."""
    return datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
