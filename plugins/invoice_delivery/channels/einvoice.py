"""E-invoice client for a Peppol access point: submit UBL documents, look up keys, poll status.

Each submission carries the delivery's idempotency key in the ``Idempotency-Key`` header: the
access point returns the first transmission id for a repeated key, and a lost reply is resolved
by looking the key up. Delivery follows Peppol's message level status: ``AB`` (acknowledged) is
pending, ``AP`` (accepted) delivered, ``RE`` (rejected) failed with the receiver's reasons.

Connection: the access point's host and port, HTTP basic login and password.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
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
# Message level status -> normalised delivery state.
STATUS_STATES = {"AB": "pending", "AP": "delivered", "RE": "failed"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EinvoiceMessage:
    """One UBL Invoice or CreditNote from one Peppol participant to another."""

    delivery_id: int
    idempotency_key: str
    sender_id: str  # Peppol participant id "scheme:value", e.g. "0007:5591837405"
    receiver_id: str
    xml: bytes  # UBL 2.1 (Peppol BIS Billing 3.0), rendered elsewhere


def _check_credentials(response: httpx.Response, operation: str) -> None:
    if response.status_code in CREDENTIAL_STATUSES:
        raise GatewayError(
            f"{operation}: the access point rejected the credentials with HTTP {response.status_code}; "
            "check the connection's login and password"
        )



def rejection_reason(response: httpx.Response) -> str:
    """Return the delivery's failure reason for a 4xx reply ``{"code", "message"}``."""
    try:
        error = response.json()
        return f"access point rejected the document ({response.status_code} {error['code']}): {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"access point rejected the document with HTTP {response.status_code}: {response.text[:300]}"


def normalise_status(status: dict) -> tuple[str, str | None]:
    """Return ``(delivered | failed | pending, detail)`` for a message level status; RE lists its reasons."""
    state = STATUS_STATES.get(status.get("status", ""), "pending")
    if state != "failed":
        return state, None
    reasons = status.get("reasons") or ["no reason given"]
    return state, "rejected by the receiver (RE): " + "; ".join(str(reason) for reason in reasons)


class EinvoiceClient:
    """Submit documents one request each, with bounded concurrency, within the rate limit."""

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

    async def send(self, messages: list[EinvoiceMessage]) -> list[SendOutcome]:
        """Submit every document and return one outcome each, in order.

        The message id of an accepted document is its transmission id. An outcome with neither
        message id nor reason is unresolved: the access point could not be reached within the
        retries, so the document may or may not have been accepted.

        Raises:
            GatewayError: the access point rejected the credentials (401, 403). The outcomes of
                documents sent before are lost, so their deliveries stay claimed.
        """
        semaphore = asyncio.Semaphore(self.config.concurrency)
        errors: list[TransientGatewayError] = []

        async with self._client() as client:

            async def one(message: EinvoiceMessage) -> SendOutcome:
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
                "%d of %d e-invoice submissions unresolved after %d attempts (last error: %s); their "
                "deliveries stay claimed and are looked up before any resend",
                len(errors),
                len(messages),
                self.config.max_attempts,
                errors[-1],
            )
        return outcomes

    async def _send_one(self, client: httpx.AsyncClient, message: EinvoiceMessage) -> SendOutcome:
        headers = {
            "Content-Type": "application/xml",
            "X-Peppol-Sender": message.sender_id,
            "X-Peppol-Receiver": message.receiver_id,
            "Idempotency-Key": message.idempotency_key,
        }

        async def post() -> httpx.Response:
            response = await client.post("/documents", content=message.xml, headers=headers)
            _check_credentials(response, "e-invoice submission")
            if response.status_code == 429 or response.status_code >= 500:
                raise_for_status(response, "e-invoice submission")
            return response

        response = await call_with_retries(self.config, "e-invoice submission", post, retry_unanswered=False)
        if response.is_success:
            return SendOutcome(message.delivery_id, True, message_id=str(response.json()["transmission_id"]))
        return SendOutcome(message.delivery_id, False, reason=rejection_reason(response))

    async def lookup(self, keys: list[str]) -> dict[str, str | None]:
        """Return ``{idempotency key: transmission id or None}``; None when the key was never accepted.

        Raises:
            TransientGatewayError: the access point was unreachable or failed on every attempt.
            GatewayError: the access point rejected the credentials (401, 403).
        """
        paths = {key: f"/documents/by-idempotency-key/{quote(key, safe='')}" for key in keys}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "e-invoice lookup", check=_check_credentials)
        return {key: None if reply.status_code == 404 else str(reply.json()["transmission_id"])
                for key, reply in replies.items()}

    async def status(self, message_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Return ``{transmission id: (state, detail)}`` with state delivered, failed or pending.

        AP is delivered, RE failed with the receiver's reasons as detail, AB pending. A
        transmission id the access point does not know, or one whose status query failed within
        the retries, is pending with the cause as detail, so that it expires at the channel's
        deadline rather than failing on a guess.

        Raises:
            GatewayError: the access point rejected the credentials (401, 403).
        """
        paths = {transmission_id: f"/documents/{quote(transmission_id, safe='')}/status"
                 for transmission_id in message_ids}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "e-invoice status",
                                     check=_check_credentials, keep_errors=True)
        return statuses_from(replies, "transmission id unknown to the access point", normalise_status)
