"""Digital mailbox client for a Kivra-style tenant API: OAuth2 token, recipient match, content.

The content request carries the delivery's idempotency key in the ``Idempotency-Key`` header; a
lost reply is resolved by looking the key up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from invoice_delivery.channels.base import (
    GatewayConfig,
    RateLimiter,
    RejectedError,
    SendOutcome,
    TransientGatewayError,
    call_with_retries,
    get_each,
    raise_for_status,
    statuses_from,
)

USERMATCH_CHUNK = 1_000
# Content status of the gateway -> normalised delivery state.
STATUS_STATES = {"pending": "pending", "delivered": "delivered", "failed": "failed"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MailboxMessage:
    delivery_id: int
    idempotency_key: str
    payload: bytes  # the rendered content request, JSON


def _content_status(body: dict[str, Any]) -> tuple[str, str | None]:
    """Return (state, detail) of a content status reply: delivered with its channel, failed, or pending."""
    state = STATUS_STATES.get(body.get("status"), "pending")
    if state == "delivered":
        return state, body.get("delivered_via")
    if state == "failed":
        return state, "the mailbox gateway reported the content as not delivered"
    return state, None


class MailboxClient:
    """Send content to digital mailboxes; one request per document, bounded concurrency."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        tenant = config.extra.get("tenant_key")
        if not tenant:
            raise ValueError("the mailbox gateway connection needs extra 'tenant_key'")
        self.prefix = f"/v2/tenant/{tenant}"
        self.limiter = RateLimiter(config.rate_limit_per_s)
        self._token: tuple[str, float] | None = None

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.config.base_url, timeout=self.config.timeout_s,
                                 limits=httpx.Limits(max_connections=self.config.concurrency))

    async def _bearer(self, client: httpx.AsyncClient) -> dict[str, str]:
        if self._token and self._token[1] > time.monotonic() + 30:
            return {"Authorization": f"Bearer {self._token[0]}"}

        async def fetch() -> httpx.Response:
            response = await client.post("/v2/auth/token", data={"grant_type": "client_credentials"},
                                         auth=(self.config.login or "", self.config.password or ""))
            raise_for_status(response, "mailbox token request")
            return response

        body = (await call_with_retries(self.config, "mailbox token", fetch)).json()
        self._token = (body["access_token"], time.monotonic() + float(body.get("expires_in", 300)))
        return {"Authorization": f"Bearer {self._token[0]}"}

    async def match(self, personal_numbers: list[str]) -> set[str]:
        """Return the personal numbers that have a mailbox accepting this sender."""
        matched: set[str] = set()
        async with self._client() as client:
            for offset in range(0, len(personal_numbers), USERMATCH_CHUNK):
                chunk = personal_numbers[offset : offset + USERMATCH_CHUNK]
                headers = await self._bearer(client)

                async def post(chunk=chunk, headers=headers) -> httpx.Response:
                    response = await client.post(f"{self.prefix}/usermatch/ssn", json={"list": chunk}, headers=headers)
                    raise_for_status(response, "mailbox usermatch")
                    return response

                matched.update((await call_with_retries(self.config, "mailbox usermatch", post)).json()["list"])
        return matched

    async def send(self, messages: list[MailboxMessage]) -> list[SendOutcome]:
        semaphore = asyncio.Semaphore(self.config.concurrency)
        async with self._client() as client:

            async def one(message: MailboxMessage) -> SendOutcome:
                async with semaphore:
                    await self.limiter.acquire()
                    headers = {**await self._bearer(client), "Idempotency-Key": message.idempotency_key,
                               "Content-Type": "application/json"}

                    async def post() -> httpx.Response:
                        response = await client.post(f"{self.prefix}/content", content=message.payload, headers=headers)
                        raise_for_status(response, "mailbox content")
                        return response

                    try:
                        response = await call_with_retries(self.config, "mailbox content", post, retry_unanswered=False)
                    except RejectedError as exc:
                        return SendOutcome(message.delivery_id, False, reason=str(exc))
                    except TransientGatewayError:
                        return SendOutcome(message.delivery_id, False)  # unresolved: stays claimed
                    return SendOutcome(message.delivery_id, True, message_id=str(response.json()["key"]))

            return list(await asyncio.gather(*(one(m) for m in messages)))

    async def lookup(self, keys: list[str]) -> dict[str, str | None]:
        """Return ``{idempotency key: content key or None}``."""
        paths = {key: f"{self.prefix}/content/by-idempotency-key/{quote(key, safe='')}" for key in keys}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "mailbox lookup",
                                     headers=lambda: self._bearer(client))
        return {key: None if reply.status_code == 404 else str(reply.json()["key"]) for key, reply in replies.items()}

    async def status(self, message_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Return ``{content key: (state, detail)}`` with state delivered, failed or pending.

        Delivered content has ``delivered_via`` (digital or paper) as detail, and failed content a
        reason. A key the gateway does not know, or one whose status query failed within the
        retries, is pending with the cause as detail, so that it expires at the channel's
        deadline rather than failing on a guess.

        Raises:
            TransientGatewayError: no access token could be had within the retries.
            RejectedError: the gateway rejected the client credentials or the tenant.
        """
        paths = {key: f"{self.prefix}/content/{quote(key, safe='')}/status" for key in message_ids}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "mailbox status",
                                     headers=lambda: self._bearer(client), keep_errors=True)
        return statuses_from(replies, "content key unknown to the mailbox gateway", _content_status)
