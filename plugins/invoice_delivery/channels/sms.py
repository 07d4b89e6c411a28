"""SMS client for a LINK Mobility-style REST gateway: batch send, lookup by reference.

Each message's ``refId`` is the delivery's idempotency key: the gateway returns the original
message id for a repeated ``refId`` instead of sending again, and a lost reply is resolved by
looking the ``refId`` up.

With a rate limit R, one request carries a tenth of a second's worth, ``max(1, R // 10)``
messages. The limiter places each request in one calendar second, at least 0.1 s before that
second ends (see ``channels.ratelimit``), so latency below that cannot move it into the next
second. A request that lands late all the same puts at most a tenth of R too many into a second.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from invoice_delivery.channels.base import (
    GatewayConfig,
    RateLimiter,
    SendOutcome,
    TransientGatewayError,
    call_with_retries,
    get_each,
    raise_for_status,
)

BATCH_LIMIT = 1_000
ACCEPTED_CODES = {1001, 1005, 1012}
TRANSIENT_CODES = {1, 3}
DEFAULT_VALIDITY_MS = 48 * 3600 * 1000


@dataclass(frozen=True)
class SmsMessage:
    delivery_id: int
    idempotency_key: str
    destination: str  # E.164
    text: str
    dcs: str  # GSM or UCS2


class SmsClient:
    """Send SMS through the gateway in batches of up to 1,000, within the configured rate limit."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.source = str(config.extra.get("source", "Invoices"))
        self.limiter = RateLimiter(config.rate_limit_per_s)

    def _client(self) -> httpx.AsyncClient:
        auth = (self.config.login, self.config.password) if self.config.login else None
        return httpx.AsyncClient(base_url=self.config.base_url, auth=auth, timeout=self.config.timeout_s,
                                 limits=httpx.Limits(max_connections=self.config.concurrency))

    def _payload(self, message: SmsMessage) -> dict:
        return {
            "source": self.source, "sourceTON": "ALPHANUMERIC", "destination": message.destination,
            "userData": message.text, "dcs": message.dcs, "refId": message.idempotency_key,
            "useDeliveryReport": True, "relativeValidityTime": DEFAULT_VALIDITY_MS,
        }

    def chunk_size(self) -> int:
        """Return the messages per request: a tenth of a second's worth with a rate limit, else the batch limit."""
        rate = self.config.rate_limit_per_s
        return min(BATCH_LIMIT, max(1, int(rate / 10))) if rate > 0 else BATCH_LIMIT

    async def _send_chunk(self, client: httpx.AsyncClient, chunk: list[SmsMessage]) -> list[SendOutcome]:
        async def post() -> httpx.Response:
            # Every try takes its own slot, so a retry after a 429 or 5xx counts in its own second.
            await self.limiter.acquire(len(chunk))
            response = await client.post("/sms/sendbatch", json={"messages": [self._payload(m) for m in chunk]})
            raise_for_status(response, f"SMS batch of {len(chunk)}")
            return response

        response = await call_with_retries(self.config, "SMS batch send", post, retry_unanswered=False)
        replies = response.json().get("messages", [])
        if len(replies) != len(chunk):
            raise TransientGatewayError(f"SMS batch send: {len(replies)} replies for {len(chunk)} messages")
        outcomes = []
        for message, reply in zip(chunk, replies, strict=True):
            code = int(reply.get("resultCode", -1))
            if code in ACCEPTED_CODES:
                outcomes.append(SendOutcome(message.delivery_id, True, message_id=str(reply["messageId"])))
            elif code in TRANSIENT_CODES:
                outcomes.append(SendOutcome(message.delivery_id, False, reason=None))
            else:
                outcomes.append(SendOutcome(message.delivery_id, False,
                                            reason=f"SMS gateway result {code}: {reply.get('description', '')}"))
        return outcomes

    async def send(self, messages: list[SmsMessage]) -> list[SendOutcome]:
        """Send all messages; an outcome with neither id nor reason means "try again later"."""
        size = self.chunk_size()
        chunks = [messages[i : i + size] for i in range(0, len(messages), size)]
        semaphore = asyncio.Semaphore(self.config.concurrency)
        async with self._client() as client:

            async def bounded(chunk: list[SmsMessage]) -> list[SendOutcome]:
                async with semaphore:
                    try:
                        return await self._send_chunk(client, chunk)
                    except TransientGatewayError:
                        # Unresolved: the rows stay claimed and are looked up before any resend.
                        return [SendOutcome(m.delivery_id, False) for m in chunk]

            results = await asyncio.gather(*(bounded(chunk) for chunk in chunks))
        return [outcome for chunk in results for outcome in chunk]

    async def lookup(self, keys: list[str]) -> dict[str, str | None]:
        """Return ``{idempotency key: message id or None}``: None when the gateway never accepted it."""
        paths = {key: f"/sms/messages/by-ref/{quote(key, safe='')}" for key in keys}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "SMS lookup")
        return {key: None if reply.status_code == 404 else str(reply.json()["messageId"])
                for key, reply in replies.items()}
