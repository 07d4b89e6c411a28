"""Paper client for a print partner's job API: one print job per letter, lookup by key, status.

Each job carries the delivery's idempotency key in the ``Idempotency-Key`` header: the partner
returns the first job id for a repeated key, and a lost reply is resolved by looking the key up.
A job that the partner reports ``posted`` counts as delivered, ``returned`` (bad address) as
failed, ``received`` and ``printed`` as pending.

Connection: the partner's host and port, HTTP basic login and password.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from invoice_delivery.channels.base import (
    GatewayConfig,
    GatewayError,
    RateLimiter,
    SendOutcome,
    TransientGatewayError,
    call_with_retries,
    gather_or_cancel,
    get_each,
    raise_for_status,
    statuses_from,
)

CREDENTIAL_STATUSES = (401, 403)
# Print partner job status -> normalised delivery state.
STATUS_STATES = {"received": "pending", "printed": "pending", "posted": "delivered", "returned": "failed"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperMessage:
    """One letter: a print-ready PDF, the postal address and the print options."""

    delivery_id: int
    idempotency_key: str
    address: dict  # {"name", "street", "postal_code", "city", "country"}
    pdf: bytes
    options: dict  # {"duplex": bool, "colour": bool, "postage": "A" | "B"}; missing keys take the partner's default


def _check_credentials(response: httpx.Response, operation: str) -> None:
    if response.status_code in CREDENTIAL_STATUSES:
        raise GatewayError(
            f"{operation}: the print partner rejected the credentials with HTTP {response.status_code}; "
            "check the connection's login and password"
        )



def job_body(message: PaperMessage) -> dict[str, Any]:
    """Build the print job request of one letter."""
    document = {
        "name": f"invoice-{message.delivery_id}.pdf",
        "content_type": "application/pdf",
        "data": base64.b64encode(message.pdf).decode("ascii"),
    }
    return {"documents": [document], "address": message.address, "options": message.options}


def rejection_reason(response: httpx.Response) -> str:
    """Return the delivery's failure reason for a 4xx reply ``{"code", "message"}``."""
    try:
        error = response.json()
        return f"print partner rejected the job ({response.status_code} {error['code']}): {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"print partner rejected the job with HTTP {response.status_code}: {response.text[:300]}"


def normalise_status(status: dict) -> tuple[str, str | None]:
    """Return ``(delivered | failed | pending, detail)`` for a job status; returned carries its reason."""
    state = STATUS_STATES.get(status.get("status", ""), "pending")
    if state != "failed":
        return state, None
    return state, status.get("reason") or "returned to sender"


class PaperClient:
    """Submit print jobs one request each, with bounded concurrency, within the rate limit."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.limiter = RateLimiter(config.rate_limit_per_s)

    def _client(self) -> httpx.AsyncClient:
        auth = (self.config.login, self.config.password or "") if self.config.login else None
        return httpx.AsyncClient(
            base_url=self.config.base_url,
            auth=auth,
            timeout=self.config.timeout_s,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        )

    async def send(self, messages: list[PaperMessage]) -> list[SendOutcome]:
        """Submit every letter and return one outcome each, in order.

        The message id of an accepted letter is its job id. An outcome with neither message id
        nor reason is unresolved: the partner could not be reached within the retries, so the
        job may or may not have been accepted.

        Raises:
            GatewayError: the partner rejected the credentials (401, 403). The outcomes of jobs
                sent before are lost, so their deliveries stay claimed.
        """
        semaphore = asyncio.Semaphore(self.config.concurrency)
        errors: list[TransientGatewayError] = []

        async with self._client() as client:

            async def one(message: PaperMessage) -> SendOutcome:
                async with semaphore:
                    await self.limiter.acquire()
                    try:
                        return await self._send_one(client, message)
                    except TransientGatewayError as exc:
                        errors.append(exc)
                        return SendOutcome(message.delivery_id, False)

            outcomes = await gather_or_cancel(one(message) for message in messages)
        if errors:
            log.warning(
                "%d of %d print jobs unresolved after %d attempts (last error: %s); their deliveries stay "
                "claimed and are looked up before any resend",
                len(errors),
                len(messages),
                self.config.max_attempts,
                errors[-1],
            )
        return outcomes

    async def _send_one(self, client: httpx.AsyncClient, message: PaperMessage) -> SendOutcome:
        body = job_body(message)
        headers = {"Idempotency-Key": message.idempotency_key}

        async def post() -> httpx.Response:
            response = await client.post("/print-jobs", json=body, headers=headers)
            _check_credentials(response, "print job")
            if response.status_code == 429 or response.status_code >= 500:
                raise_for_status(response, "print job")
            return response

        response = await call_with_retries(self.config, "print job", post, retry_unanswered=False)
        if response.is_success:
            return SendOutcome(message.delivery_id, True, message_id=str(response.json()["job_id"]))
        return SendOutcome(message.delivery_id, False, reason=rejection_reason(response))

    async def lookup(self, keys: list[str]) -> dict[str, str | None]:
        """Return ``{idempotency key: job id or None}``; None when the partner never accepted the key.

        Raises:
            TransientGatewayError: the partner was unreachable or failed on every attempt.
            GatewayError: the partner rejected the credentials (401, 403).
        """
        paths = {key: f"/print-jobs/by-idempotency-key/{quote(key, safe='')}" for key in keys}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "print job lookup", check=_check_credentials)
        return {key: None if reply.status_code == 404 else str(reply.json()["job_id"])
                for key, reply in replies.items()}

    async def status(self, message_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Return ``{job id: (state, detail)}`` with state delivered, failed or pending.

        Posted is delivered, returned failed with the partner's reason as detail, received and
        printed pending. A job id the partner does not know, or one whose status query failed
        within the retries, is pending with the cause as detail, so that it expires at the
        channel's deadline rather than failing on a guess.

        Raises:
            GatewayError: the partner rejected the credentials (401, 403).
        """
        paths = {job_id: f"/print-jobs/{quote(job_id, safe='')}" for job_id in message_ids}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "print job status",
                                     check=_check_credentials, keep_errors=True)
        return statuses_from(replies, "job id unknown to the print partner", normalise_status)
