"""App push client for a Firebase Cloud Messaging HTTP v1-style gateway: one request per message.

Each request carries the delivery's idempotency key in the ``Idempotency-Key`` header (our
contract, because FCM has none): the gateway returns the first message's name for a repeated
key, and a lost reply is resolved by looking the key up. A dead installation token
(``UNREGISTERED``) is a rejection with the reason :data:`UNREGISTERED_REASON`, so that the
customer counts as unreachable on push until the app registers a new token.

Connection: the gateway's host and port, the bearer token as the password, extra ``project``
(the FCM project id).

Sends go through aiohttp; lookups go through httpx, like every other client. One request per
message makes the client's cost per request the limit: against the gateway simulator on this
project's idle 2-core benchmark machine, aiohttp sent about 6,400 requests per second
(``python -m benchmarks.bench_push``) where the earlier httpx client sent about 1,400
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx

from invoice_delivery.channels.base import (
    GatewayConfig,
    GatewayError,
    RateLimiter,
    SendOutcome,
    TransientGatewayError,
    UnansweredError,
    call_with_retries,
    gather_or_cancel,
    get_each,
    raise_for_status,
)

UNREGISTERED_REASON = "push token unregistered"
CREDENTIAL_STATUSES = (401, 403)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushMessage:
    """One notification to one app installation."""

    delivery_id: int
    idempotency_key: str
    token: str  # the app installation's registration token
    payload: bytes  # JSON {"title", "body", "data": {string: string}}, rendered elsewhere


def request_body(message: PushMessage) -> dict[str, Any]:
    """Build the FCM send request from the rendered payload.

    Raises:
        ValueError: the payload is not JSON with string ``title`` and ``body`` and an optional
            ``data`` object of strings; the message names the delivery.
    """
    try:
        payload = json.loads(message.payload)
    except ValueError as exc:
        raise ValueError(f"push payload of delivery {message.delivery_id} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or not all(isinstance(payload.get(key), str) for key in ("title", "body")):
        raise ValueError(f"push payload of delivery {message.delivery_id} needs the string fields title and body")
    data = payload.get("data") or {}
    if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
        raise ValueError(
            f"push payload of delivery {message.delivery_id} has data that is not an object of strings; "
            "FCM accepts string values only"
        )
    body: dict[str, Any] = {
        "token": message.token,
        "notification": {"title": payload["title"], "body": payload["body"]},
    }
    if data:
        body["data"] = data
    return {"message": body}


def rejection_reason(response: httpx.Response) -> str:
    """Return the delivery's failure reason for a 4xx reply in FCM's error shape."""
    try:
        error = response.json().get("error", {})
        codes = {detail.get("errorCode") for detail in error.get("details", [])} | {error.get("status")}
        message = error.get("message") or response.text[:300]
    except (ValueError, AttributeError):
        return f"push gateway rejected the message with HTTP {response.status_code}: {response.text[:300]}"
    if "UNREGISTERED" in codes:
        return UNREGISTERED_REASON
    return f"push gateway rejected the message with HTTP {response.status_code} {error.get('status')}: {message}"


def _check_credentials(response: httpx.Response, operation: str) -> None:
    if response.status_code in CREDENTIAL_STATUSES:
        raise GatewayError(
            f"{operation}: the push gateway rejected the credentials with HTTP {response.status_code}; "
            "check the connection's password (the bearer token) and its extra 'project'"
        )


class PushClient:
    """Send push notifications one request each, with bounded concurrency, within the rate limit."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        project = config.extra.get("project")
        if not project:
            raise ValueError("the push gateway connection needs extra 'project', the FCM project id")
        if not config.password:
            # NOTE: real FCM expects a short-lived OAuth2 access token of a service account. This
            # client sends the connection's password as a static bearer token and never refreshes it.
            raise ValueError("the push gateway connection needs the bearer token as its password")
        self.prefix = f"/v1/projects/{quote(str(project), safe='')}/messages"
        self.limiter = RateLimiter(config.rate_limit_per_s)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.config.base_url,
            headers={"Authorization": f"Bearer {self.config.password}"},
            timeout=self.config.timeout_s,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        )

    async def send(self, messages: list[PushMessage]) -> list[SendOutcome]:
        """Send every message and return one outcome each, in order.

        An outcome with neither message id nor reason is unresolved: the gateway could not be
        reached within the retries, so the message may or may not have been accepted.

        Raises:
            ValueError: a payload is invalid; nothing was sent.
            GatewayError: the gateway rejected the credentials or the project (401, 403). The
                outcomes of messages sent before are lost, so their deliveries stay claimed.
        """
        bodies = [json.dumps(request_body(message)).encode() for message in messages]
        semaphore = asyncio.Semaphore(self.config.concurrency)
        errors: list[TransientGatewayError] = []

        async with self._session() as session:

            async def one(message: PushMessage, body: bytes) -> SendOutcome:
                async with semaphore:
                    await self.limiter.acquire()
                    try:
                        return await self._send_one(session, message, body)
                    except TransientGatewayError as exc:
                        errors.append(exc)
                        return SendOutcome(message.delivery_id, False)

            outcomes = await gather_or_cancel(
                one(message, body) for message, body in zip(messages, bodies, strict=True)
            )
        if errors:
            log.warning(
                "%d of %d push sends unresolved after %d attempts (last error: %s); their deliveries stay "
                "claimed and are looked up before any resend",
                len(errors),
                len(messages),
                self.config.max_attempts,
                errors[-1],
            )
        return outcomes

    def _session(self) -> aiohttp.ClientSession:
        timeout = self.config.timeout_s
        return aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.config.password}", "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout),
            connector=aiohttp.TCPConnector(limit=self.config.concurrency),
        )

    async def _send_one(self, session: aiohttp.ClientSession, message: PushMessage, body: bytes) -> SendOutcome:
        url = f"{self.config.base_url.rstrip('/')}{self.prefix}:send"
        headers = {"Idempotency-Key": message.idempotency_key}

        async def post() -> httpx.Response:
            try:
                async with session.post(url, data=body, headers=headers) as reply:
                    response = httpx.Response(reply.status, headers=list(reply.headers.items()),
                                              content=await reply.read())
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # No connection, so the gateway never saw the request: safe to retry in place.
                raise TransientGatewayError(f"push send: cannot connect: {exc}") from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise UnansweredError(f"push send: no reply within {self.config.timeout_s}s or connection lost: "
                                      f"{type(exc).__name__}") from exc
            _check_credentials(response, "push send")
            if response.status_code == 429 or response.status_code >= 500:
                raise_for_status(response, "push send")
            return response

        response = await call_with_retries(self.config, "push send", post, retry_unanswered=False)
        if response.is_success:
            return SendOutcome(message.delivery_id, True, message_id=str(response.json()["name"]))
        return SendOutcome(message.delivery_id, False, reason=rejection_reason(response))

    async def lookup(self, keys: list[str]) -> dict[str, str | None]:
        """Return ``{idempotency key: message name or None}``; None when the gateway never accepted the key.

        Raises:
            TransientGatewayError: the gateway was unreachable or failed on every attempt.
            GatewayError: the gateway rejected the credentials or the project (401, 403).
        """
        paths = {key: f"{self.prefix}/by-idempotency-key/{quote(key, safe='')}" for key in keys}
        async with self._client() as client:
            replies = await get_each(self.config, client, paths, "push lookup", check=_check_credentials)
        return {key: None if reply.status_code == 404 else str(reply.json()["name"]) for key, reply in replies.items()}
