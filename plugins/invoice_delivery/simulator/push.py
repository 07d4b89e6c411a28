"""Simulate an app push gateway modelled on Firebase Cloud Messaging (FCM) HTTP v1.

Routes (``Authorization: Bearer <push.bearer_token>`` on all of them):

- ``POST /v1/projects/{project}/messages:send``: ``{"message": {"token", "notification":
  {"title", "body"}, "data": {string: string}}}``. HTTP 200 with ``{"name":
  "projects/{project}/messages/{id}"}``. The ``Idempotency-Key`` header is our contract, because
  FCM has none: a repeated key returns the first message's name and counts a duplicate.
- ``GET /v1/projects/{project}/messages/by-idempotency-key/{key}``: the message accepted with this
  key, or 404. Our contract, used to resolve a send whose reply was lost.

Errors have FCM's shape: ``{"error": {"code", "message", "status", "details": [{"@type":
"type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode"}]}}``. A dead installation
token (listed in ``push.dead_tokens``, starting with ``dead-``, or rejected by the faults) gets 404
with status ``NOT_FOUND`` and errorCode ``UNREGISTERED``. An injected 429 gets status
``RESOURCE_EXHAUSTED``, errorCode ``QUOTA_EXCEEDED`` and ``Retry-After``.

FCM sends no delivery receipt. For ``push.open_rate`` of the accepted messages, the app reports
that the customer opened the notification, through our receiver (our contract): ``{"event":
"opened", "name", "timestamp"}``, signed, after the receipt delay.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from invoice_delivery.simulator.context import SimulatorContext, iso_timestamp
from invoice_delivery.simulator.state import ChannelStore, MessageRecord

NAME = "push"
DEAD_TOKEN_PREFIX = "dead-"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# FCM's payload limit for messages to a token, in bytes of data keys and values plus notification text.
MAX_PAYLOAD_BYTES = 4096
# Data keys that FCM reserves for itself.
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
RESERVED_DATA_PREFIXES = ("google", "gcm")

# HTTP status -> (google.rpc status, FCM errorCode) of the errors this module sends.
ERROR_CODES = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    401: ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    404: ("NOT_FOUND", "UNREGISTERED"),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
    500: ("INTERNAL", "INTERNAL"),
    503: ("UNAVAILABLE", "UNAVAILABLE"),
    504: ("DEADLINE_EXCEEDED", "UNAVAILABLE"),
}


class InvalidMessage(ValueError):
    """Raised by the message checks; carries the JSON path of the invalid field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def fcm_error(status: int, message: str, *, field: str | None = None, error_code: str | None = None) -> dict:
    """Return an FCM error body; ``field`` adds a BadRequest field violation."""
    rpc_status, default_code = ERROR_CODES.get(status, ("UNAVAILABLE", "UNAVAILABLE"))
    detail: dict[str, Any] = {"@type": FCM_ERROR_TYPE, "errorCode": error_code or default_code}
    details = [detail]
    if field is not None:
        details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": field, "description": message}]})
    return {"error": {"code": status, "message": message, "status": rpc_status, "details": details}}


def error_response(status: int, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(fcm_error(status, message, **kwargs), status_code=status)


def _error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return fcm_error(status, message)


def _check_notification(notification: Any) -> int:
    """Validate ``message.notification`` and return the size of its text in bytes."""
    if notification is None:
        return 0
    if not isinstance(notification, dict):
        raise InvalidMessage("message.notification", "message.notification must be an object with title and body")
    size = 0
    for key in ("title", "body"):
        value = notification.get(key)
        if not isinstance(value, str) or not value:
            field = f"message.notification.{key}"
            raise InvalidMessage(field, f"{field} must be a non-empty string")
        size += len(value.encode())
    return size


def _check_data(data: Any) -> int:
    """Validate ``message.data`` and return the size of its keys and values in bytes."""
    if data is None:
        return 0
    if not isinstance(data, dict):
        raise InvalidMessage("message.data", "message.data must be an object with string values")
    size = 0
    for key, value in data.items():
        if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
            raise InvalidMessage(f"message.data.{key}", f"message.data key {key!r} is reserved by FCM; rename it")
        if not isinstance(value, str):
            raise InvalidMessage(
                f"message.data.{key}", f"message.data.{key} must be a string, got {type(value).__name__}"
            )
        size += len(key.encode()) + len(value.encode())
    return size


def check_message(body: Any) -> str:
    """Validate a send request and return the installation token it targets.

    Raises:
        InvalidMessage: a field is missing or invalid; ``field`` is its JSON path. Messages never
            quote the token.
    """
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise InvalidMessage("message", 'request body must be {"message": {...}}')
    message = body["message"]
    if "topic" in message or "condition" in message:
        raise InvalidMessage("message.token", "only token targets are simulated; set message.token")
    token = message.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidMessage("message.token", "message.token is missing; set the app installation's token")
    if "notification" not in message and "data" not in message:
        raise InvalidMessage("message.notification", "set message.notification, message.data or both")
    size = _check_notification(message.get("notification")) + _check_data(message.get("data"))
    # NOTE: FCM counts the payload with its own encoding; this sum of UTF-8 lengths is an approximation.
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessage(
            "message", f"message payload is {size} bytes, more than FCM's {MAX_PAYLOAD_BYTES}; shorten it"
        )
    return token


def record_json(record: MessageRecord) -> dict[str, Any]:
    """Return the by-idempotency-key lookup body of one accepted message."""
    opened_at = record.status.get("opened_at")
    return {
        "name": record.message_id,
        "idempotency_key": record.idempotency_key,
        "received_at": iso_timestamp(record.received_at),
        "opened_at": iso_timestamp(opened_at) if opened_at is not None else None,
    }


class PushGateway:
    """Authorisation and per-message processing of the push routes."""

    def __init__(self, sim: SimulatorContext) -> None:
        self.sim = sim
        self.config = sim.config.push
        sim.receipts.register(NAME, self.config.receipts, self.config.webhook_secret)

    @property
    def store(self) -> ChannelStore:
        return self.sim.state.channel(NAME)

    def authorize(self, request: Request, project: str) -> JSONResponse | None:
        """Return a 401 or 403 response unless the request has the bearer token and the configured project."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token_ok = hmac.compare_digest(token.strip().encode(), self.config.bearer_token.encode())
        if scheme.lower() != "bearer" or not token_ok:
            response = error_response(401, "missing or invalid bearer token; send the configured push.bearer_token")
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        if project != self.config.project:
            return error_response(403, f"the bearer token does not grant access to project {project!r}")
        return None

    def is_dead(self, token: str) -> bool:
        """Return whether the token is unregistered, and count a fault when the faults made it so."""
        if token.startswith(DEAD_TOKEN_PREFIX) or token in self.config.dead_tokens:
            return True
        rejection = self.sim.faults.rejection(NAME, token)
        if rejection is not None:
            self.store.stats.faults_injected[f"{rejection}_recipient"] += 1
            return True
        return False

    def send(self, body: Any, idempotency_key: str | None) -> JSONResponse:
        """Validate, deduplicate and accept one message."""
        store = self.store
        try:
            token = check_message(body)
        except InvalidMessage as exc:
            store.stats.rejected += 1
            return error_response(400, str(exc), field=exc.field)

        existing = store.by_key.get(idempotency_key) if idempotency_key is not None else None
        if existing is not None:
            store.stats.duplicates_offered += 1
            return JSONResponse({"name": existing.message_id}, headers={"Idempotent-Replayed": "true"})

        if self.is_dead(token):
            store.stats.rejected += 1
            return error_response(404, "Requested entity was not found.", error_code="UNREGISTERED")

        record = self._accept(body["message"], token, idempotency_key)
        return JSONResponse({"name": record.message_id})

    def _accept(self, message: dict[str, Any], token: str, idempotency_key: str | None) -> MessageRecord:
        now = time.time()
        record = MessageRecord(
            channel=NAME,
            message_id=f"projects/{self.config.project}/messages/0:{secrets.token_hex(12)}",
            idempotency_key=idempotency_key,
            recipient=token,
            received_at=now,
            body=message,
            status={"opened_at": None},
        )
        self.store.accept(record)
        if self.sim.outcome_rng(NAME).random() < self.config.open_rate:
            self.sim.receipts.schedule(NAME, lambda: self._opened_receipt(record))
        return record

    @staticmethod
    def _opened_receipt(record: MessageRecord) -> dict[str, Any]:
        """Mark the message opened and return the receipt payload."""
        now = time.time()
        record.status["opened_at"] = now
        return {"event": "opened", "name": record.message_id, "timestamp": iso_timestamp(now)}


async def _read_json(request: Request) -> tuple[Any, JSONResponse | None]:
    try:
        return json.loads(await request.body()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, error_response(400, f"request body is not valid JSON: {exc}")


def build_router(sim: SimulatorContext) -> APIRouter:
    """Create the push routes on top of the shared simulator context."""
    gateway = PushGateway(sim)
    router = APIRouter(prefix="/v1/projects/{project}/messages", tags=["push"])

    async def enter(request: Request, project: str, route: str) -> JSONResponse | float:
        gateway.store.stats.requests += 1
        denied = gateway.authorize(request, project)
        if denied is not None:
            return denied
        return await sim.faults.before_request(NAME, gateway.store.stats, route, _error_body)

    @router.post(":send")
    async def send(project: str, request: Request) -> JSONResponse:
        """Send one message to one app installation."""
        entered = await enter(request, project, "send")
        if isinstance(entered, JSONResponse):
            return entered
        body, invalid = await _read_json(request)
        if invalid is not None:
            return invalid
        async with sim.receipts.early_receipts_before_reply():
            response = gateway.send(body, request.headers.get("idempotency-key") or None)
        await sim.faults.after_accept(entered)
        return response

    @router.get("/by-idempotency-key/{idempotency_key}")
    async def message_by_idempotency_key(project: str, idempotency_key: str, request: Request) -> JSONResponse:
        """Return the message accepted with this Idempotency-Key, or 404."""
        entered = await enter(request, project, "other")
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_key.get(idempotency_key)
        if record is None:
            return error_response(
                404, f"no message was accepted with Idempotency-Key {idempotency_key!r}", error_code="UNSPECIFIED_ERROR"
            )
        return JSONResponse(record_json(record))

    return router
