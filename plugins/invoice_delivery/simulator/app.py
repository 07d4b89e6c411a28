"""Compose the simulator's FastAPI application from the channel routers and the ``/_sim`` routes.

Inspection and control routes (our test contract):

- ``GET /health``: ``{"status": "ok", "channels": [...], "smtp_port": N}``. It responds only after
  the SMTP server of the e-mail channel listens.
- ``GET /_sim/stats``: per channel ``requests``, ``messages_accepted``, ``duplicates_offered``,
  ``rejected``, ``faults_injected`` by kind, ``accepted_per_second`` (Unix second -> count) and
  ``receipts`` by outcome.
- ``GET /_sim/messages?channel=sms``: the channel's accepted messages in acceptance order, for
  every channel in ``config.CHANNELS``.
- ``GET /_sim/receipts?channel=sms[&status=outbox]``: scheduled and sent receipts with their
  signed body and headers. Without a receipt URL, due receipts stay here with status ``outbox``.
- ``GET /_sim/faults`` and ``POST /_sim/faults`` ``{channel: {...}}``: read or replace faults.
  A posted channel's object replaces that channel's faults entirely, so ``{}`` clears them.
- ``POST /_sim/reset``: forget messages, counters and receipts; restore the configured faults
  and restart the random sequences from the seed. The reply comes after receipt POSTs in flight
  have finished. Issued mailbox access tokens stay valid.

To add a channel, write a module with ``NAME`` and ``build_router(sim)``, add it to
``CHANNEL_MODULES``, add its name to ``config.CHANNELS`` and its settings to ``SimulatorConfig``.
A channel that needs a server of its own, such as e-mail's SMTP server, appends it to
``sim.services`` in ``build_router``. The application starts it before serving and stops it on
shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from invoice_delivery.simulator import einvoice, email, mailbox, paper, push, sms
from invoice_delivery.simulator.config import CHANNELS, FaultConfig, SimulatorConfig
from invoice_delivery.simulator.context import SimulatorContext
from invoice_delivery.simulator.faults import FaultInjector, InjectedFault
from invoice_delivery.simulator.receipts import ReceiptScheduler
from invoice_delivery.simulator.state import SimulatorState

CHANNEL_MODULES = (sms, mailbox, push, email, einvoice, paper)


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """Build the simulator application; its receipt scheduler runs while the app's lifespan does."""
    config = config or SimulatorConfig()
    names = tuple(module.NAME for module in CHANNEL_MODULES)
    if names != CHANNELS:
        raise RuntimeError(f"channel modules {names} do not match config.CHANNELS {CHANNELS}; list each once in both")

    state = SimulatorState(CHANNELS)
    faults = FaultInjector(config)
    sim = SimulatorContext(config=config, state=state, faults=faults, receipts=ReceiptScheduler(state, faults))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sim.receipts.start()
        started = []
        try:
            for service in sim.services:
                await service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                await service.stop()
            await sim.receipts.stop()

    app = FastAPI(title="Invoice delivery gateway simulator", lifespan=lifespan)
    app.state.simulator = sim
    app.add_exception_handler(InjectedFault, _injected_fault_response)
    for module in CHANNEL_MODULES:
        app.include_router(module.build_router(sim))
    app.include_router(_control_router(sim))
    return app


async def _injected_fault_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InjectedFault)
    return exc.response


def _unknown_channel(channel: str) -> JSONResponse:
    message = f"unknown channel {channel!r}; valid channels are {list(CHANNELS)}"
    return JSONResponse({"detail": message}, status_code=404)


def _control_router(sim: SimulatorContext) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """Report that the simulator is up, which channels it serves and its SMTP port."""
        return {"status": "ok", "channels": list(CHANNELS), "smtp_port": sim.config.email.smtp_port}

    @router.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        """Return every channel's counters."""
        return sim.state.stats()

    @router.get("/_sim/messages", response_model=None)
    async def messages(channel: str) -> list[dict[str, Any]] | JSONResponse:
        """List one channel's accepted messages."""
        if channel not in CHANNELS:
            return _unknown_channel(channel)
        return [record.to_json() for record in sim.state.channel(channel).messages()]

    @router.get("/_sim/receipts", response_model=None)
    async def receipts(channel: str | None = None, status: str | None = None) -> list[dict[str, Any]] | JSONResponse:
        """List receipts of one channel or of all, optionally filtered by status."""
        if channel is not None and channel not in CHANNELS:
            return _unknown_channel(channel)
        return sim.receipts.deliveries(channel, status)

    @router.get("/_sim/faults")
    async def get_faults() -> dict[str, Any]:
        """Return the current faults of every channel."""
        return sim.faults.snapshot()

    @router.post("/_sim/faults", response_model=None)
    async def set_faults(request: Request) -> dict[str, Any] | JSONResponse:
        """Replace the faults of the channels named in the body."""
        return await _replace_faults(sim, request)

    @router.post("/_sim/reset")
    async def reset() -> dict[str, str]:
        """Forget all messages, counters and receipts and restore the configured faults."""
        await sim.reset()
        return {"status": "reset"}

    return router


async def _replace_faults(sim: SimulatorContext, request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError as exc:
        return JSONResponse({"detail": f"request body is not valid JSON: {exc}"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"detail": "body must be an object {channel: {fault fields}}"}, status_code=400)
    unknown = sorted(set(body) - set(CHANNELS))
    if unknown:
        return _unknown_channel(", ".join(unknown))
    try:
        parsed = {channel: FaultConfig.model_validate(fields) for channel, fields in body.items()}
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        return JSONResponse({"detail": "invalid fault configuration", "errors": errors}, status_code=400)
    for channel, faults in parsed.items():
        sim.faults.set(channel, faults)
    return sim.faults.snapshot()
