"""Simulate an SMS gateway modelled on LINK Mobility's REST SMS API.

Routes (HTTP basic auth on all of them):

- ``POST /sms/send``: one message. HTTP 202 when it is queued (``resultCode`` 1005) or is a
  duplicate of a queued one, HTTP 400 with the same reply shape when it is rejected.
- ``POST /sms/sendbatch``: ``{"messages": [...]}`` with 1 to 1,000 messages. HTTP 200 with
  ``{"messages": [...]}``, one reply per message in request order.
- ``GET /sms/messages/by-ref/{refId}``: the message accepted with this ``refId``, or 404. This
  lookup is our contract, used to resolve a send whose reply was lost.

Each reply has ``messageId``, ``resultCode`` and ``description``. ``refId`` is the idempotency
key: a repeated ``refId`` returns the first message's ``messageId`` and counts a duplicate.

Unless a message sets ``useDeliveryReport`` to false, its delivery report falls due after the
configured delay: ``refId``, ``id``, ``operator``, ``sendTimestamp``, ``timestamp``,
``resultCode`` (1001 delivered, or 1006 / 2104 for the configured failure rate),
``operatorResultCode`` and ``segments``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from invoice_delivery.simulator.context import (
    SimulatorContext,
    basic_credentials,
    credentials_match,
    iso_timestamp,
)
from invoice_delivery.simulator.state import ChannelStore, MessageRecord

NAME = "sms"
MAX_BATCH = 1000

RESULT_TEMPORARY_ERROR = 1
# NOTE: LINK's code for a malformed message is not in the result-code list we model, so the
# permanent routing error (2) is used instead. The description names the invalid field.
RESULT_INVALID = 2
RESULT_THROTTLED = 3
RESULT_DELIVERED = 1001
RESULT_QUEUED = 1005
RESULT_NOT_DELIVERED = 1006
RESULT_UNKNOWN_SUBSCRIBER = 2104
RESULT_DESTINATION_BLOCKED = 2105

# Fields that the source, destination, text and refId checks cover; any other field is optional.
CORE_FIELDS = frozenset({"source", "sourceTON", "destination", "userData", "dcs", "refId"})
SOURCE_TONS = ("ALPHANUMERIC", "SHORTCODE", "MSISDN")
DATA_CODINGS = ("GSM", "UCS2")
ALPHANUMERIC_SENDER = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,11}")
NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")
E164 = re.compile(r"\+[0-9]{8,15}")

# GSM 03.38 default alphabet, and the extension table whose characters take two positions.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
GSM7 = GSM7_BASIC | GSM7_EXTENSION


def count_segments(text: str, dcs: str) -> int:
    """Return how many SMS parts ``text`` needs: GSM-7 160 or 153 per part, UCS-2 70 or 67.

    Note:
        Gateways usually avoid splitting a two-position GSM-7 character across parts, which can
        add a part in rare cases. This count ignores that.
    """
    if dcs == "GSM":
        length = len(text) + sum(text.count(char) for char in GSM7_EXTENSION.intersection(text))
        single, multi = 160, 153
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if length <= single else math.ceil(length / multi)


def validation_error(message: Any) -> str | None:
    """Return why ``message`` is not a valid send request, naming the field, or None if it is valid.

    Messages never quote the destination, because it is personal data that clients may log.
    """
    if not isinstance(message, dict):
        return f"message must be a JSON object, got {type(message).__name__}"
    for check in (_source_error, _destination_error, _user_data_error, _ref_id_error, _options_error):
        error = check(message)
        if error is not None:
            return error
    return None


def _source_error(message: dict[str, Any]) -> str | None:
    source, ton = message.get("source"), message.get("sourceTON")
    if not isinstance(source, str) or not source:
        return "source is missing; set the sender name or number"
    if ton not in SOURCE_TONS:
        return f"sourceTON {ton!r} is invalid; use one of {', '.join(SOURCE_TONS)}"
    if ton == "ALPHANUMERIC" and not ALPHANUMERIC_SENDER.fullmatch(source):
        return (
            f"source {source!r} is invalid for sourceTON ALPHANUMERIC; "
            "use 1 to 11 letters or digits, at least one of them a letter"
        )
    if ton != "ALPHANUMERIC" and not NUMERIC_SENDER.fullmatch(source):
        return f"source {source!r} is invalid for sourceTON {ton}; use a number of at most 15 digits"
    return None


def _destination_error(message: dict[str, Any]) -> str | None:
    destination = message.get("destination")
    if not isinstance(destination, str) or not destination:
        return "destination is missing; set the recipient's number in E.164 form"
    if not E164.fullmatch(destination):
        return "destination is not in E.164 form; use '+' followed by 8 to 15 digits"
    return None


def _user_data_error(message: dict[str, Any]) -> str | None:
    text, dcs = message.get("userData"), message.get("dcs", "GSM")
    if dcs not in DATA_CODINGS:
        return f"dcs {dcs!r} is invalid; use GSM or UCS2"
    if not isinstance(text, str) or not text:
        return "userData is missing or empty; set the message text"
    if dcs == "GSM" and not GSM7.issuperset(text):
        outside = sorted(set(text) - GSM7)[:5]
        return f"userData has characters outside GSM-7 ({''.join(outside)!r}); set dcs to UCS2"
    return None


def _ref_id_error(message: dict[str, Any]) -> str | None:
    ref_id = message.get("refId")
    if not isinstance(ref_id, str) or not ref_id:
        return "refId is missing; set the idempotency key of this message"
    return None


def _options_error(message: dict[str, Any]) -> str | None:
    if message.keys() <= CORE_FIELDS:
        return None
    for name in ("platformId", "platformPartnerId"):
        if name in message and not isinstance(message[name], str):
            return f"{name} must be a string"
    if "useDeliveryReport" in message and not isinstance(message["useDeliveryReport"], bool):
        return "useDeliveryReport must be true or false"
    gates = message.get("deliveryReportGates", [])
    if not isinstance(gates, list) or not all(isinstance(gate, str) for gate in gates):
        return "deliveryReportGates must be a list of strings"
    validity = message.get("relativeValidityTime", 1)
    if isinstance(validity, bool) or not isinstance(validity, int) or validity <= 0:
        return f"relativeValidityTime {validity!r} is invalid; use a positive number of milliseconds"
    custom = message.get("customParameters", {})
    if not isinstance(custom, dict) or not all(isinstance(value, str) for value in custom.values()):
        return "customParameters must be an object with string values"
    return None


def message_reply(message_id: str | None, result_code: int, description: str) -> dict[str, Any]:
    return {"messageId": message_id, "resultCode": result_code, "description": description}


def _error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    code = RESULT_THROTTLED if status == 429 else RESULT_TEMPORARY_ERROR
    return {"resultCode": code, "description": message}


def segments_of(record: MessageRecord) -> int:
    return count_segments(record.body["userData"], record.body.get("dcs", "GSM"))


def record_json(record: MessageRecord) -> dict[str, Any]:
    """Return the ``by-ref`` lookup body of one accepted message."""
    return {
        "messageId": record.message_id,
        "refId": record.idempotency_key,
        "destination": record.recipient,
        "source": record.body.get("source"),
        "resultCode": record.status["resultCode"],
        "description": record.status["description"],
        "segments": segments_of(record),
        "receivedAt": iso_timestamp(record.received_at),
        "updatedAt": iso_timestamp(record.status["updated_at"]),
    }


class SmsGateway:
    """Per-message processing of the SMS routes."""

    def __init__(self, sim: SimulatorContext) -> None:
        self.sim = sim
        self.config = sim.config.sms
        sim.receipts.register(NAME, self.config.receipts, self.config.webhook_secret)

    @property
    def store(self) -> ChannelStore:
        return self.sim.state.channel(NAME)

    def authenticate(self, request: Request) -> JSONResponse | None:
        """Return a 401 response unless the request carries the configured basic credentials."""
        if credentials_match(basic_credentials(request), self.config.username, self.config.password):
            return None
        return JSONResponse(
            {"description": "missing or invalid HTTP basic credentials; use the configured username and password"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="sms"'},
        )

    def process(self, message: Any, now: float) -> dict[str, Any]:
        """Validate, deduplicate and accept one message; return its reply."""
        store = self.store
        error = validation_error(message)
        if error is not None:
            store.stats.rejected += 1
            return message_reply(None, RESULT_INVALID, error)

        existing = store.by_key.get(message["refId"])
        if existing is not None:
            store.stats.duplicates_offered += 1
            return message_reply(existing.message_id, RESULT_QUEUED, "Duplicate refId: the first message is kept")

        rejection = self.sim.faults.rejection(NAME, message["destination"])
        if rejection is not None:
            store.stats.rejected += 1
            store.stats.faults_injected[f"{rejection}_recipient"] += 1
            if rejection == "block":
                return message_reply(None, RESULT_DESTINATION_BLOCKED, "Destination blocked")
            return message_reply(None, RESULT_UNKNOWN_SUBSCRIBER, "Unknown subscriber")

        record = self._accept(message, now)
        return message_reply(record.message_id, RESULT_QUEUED, "Queued")

    def _accept(self, message: dict[str, Any], now: float) -> MessageRecord:
        record = MessageRecord(
            channel=NAME,
            message_id=secrets.token_hex(16),
            idempotency_key=message["refId"],
            recipient=message["destination"],
            received_at=now,
            body=message,
            status={"resultCode": RESULT_QUEUED, "description": "Queued", "updated_at": now},
        )
        self.store.accept(record)
        result_code = self._draw_outcome()
        if message.get("useDeliveryReport", True):
            self.sim.receipts.schedule(NAME, lambda: self._delivery_report(record, result_code))
        return record

    def _draw_outcome(self) -> int:
        draw = self.sim.outcome_rng(NAME).random()
        rate = self.config.dlr_failure_rate
        if draw >= rate:
            return RESULT_DELIVERED
        return RESULT_NOT_DELIVERED if draw < rate / 2 else RESULT_UNKNOWN_SUBSCRIBER

    def _delivery_report(self, record: MessageRecord, result_code: int) -> dict[str, Any]:
        """Mark the message with its final result and return the delivery report payload."""
        now = time.time()
        description = "Delivered" if result_code == RESULT_DELIVERED else "Not delivered"
        record.status.update(resultCode=result_code, description=description, updated_at=now)
        return {
            "refId": record.idempotency_key,
            "id": record.message_id,
            "operator": self.config.operator,
            "sendTimestamp": iso_timestamp(record.received_at),
            "timestamp": iso_timestamp(now),
            "resultCode": result_code,
            # NOTE: operator result codes vary by operator; "0" and "1" only stand for success and failure.
            "operatorResultCode": "0" if result_code == RESULT_DELIVERED else "1",
            "segments": segments_of(record),
        }


async def _read_json(request: Request) -> tuple[Any, JSONResponse | None]:
    try:
        return json.loads(await request.body()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        body = {"resultCode": RESULT_INVALID, "description": f"request body is not valid JSON: {exc}"}
        return None, JSONResponse(body, status_code=400)


def build_router(sim: SimulatorContext) -> APIRouter:
    """Create the SMS routes on top of the shared simulator context."""
    gateway = SmsGateway(sim)
    router = APIRouter(prefix="/sms", tags=["sms"])

    async def enter(request: Request, route: str) -> JSONResponse | float:
        gateway.store.stats.requests += 1
        denied = gateway.authenticate(request)
        if denied is not None:
            return denied
        return await sim.faults.before_request(NAME, gateway.store.stats, route, _error_body)

    @router.post("/send")
    async def send(request: Request) -> JSONResponse:
        """Send one message."""
        entered = await enter(request, "send")
        if isinstance(entered, JSONResponse):
            return entered
        message, invalid = await _read_json(request)
        if invalid is not None:
            return invalid
        async with sim.receipts.early_receipts_before_reply():
            reply = gateway.process(message, time.time())
        await sim.faults.after_accept(entered)
        status = 202 if reply["resultCode"] == RESULT_QUEUED else 400
        return JSONResponse(reply, status_code=status)

    @router.post("/sendbatch")
    async def send_batch(request: Request) -> JSONResponse:
        """Send 1 to 1,000 messages; reply per message in request order."""
        entered = await enter(request, "send")
        if isinstance(entered, JSONResponse):
            return entered
        body, invalid = await _read_json(request)
        if invalid is not None:
            return invalid
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
            count = len(messages) if isinstance(messages, list) else "no list"
            description = f"messages must be a list of 1 to {MAX_BATCH} messages, got {count}"
            return JSONResponse({"resultCode": RESULT_INVALID, "description": description}, status_code=400)
        now = time.time()
        async with sim.receipts.early_receipts_before_reply():
            replies = [gateway.process(message, now) for message in messages]
        await sim.faults.after_accept(entered)
        return JSONResponse({"messages": replies})

    @router.get("/messages/by-ref/{ref_id}")
    async def message_by_ref(ref_id: str, request: Request) -> JSONResponse:
        """Return the message accepted with this refId, or 404."""
        entered = await enter(request, "other")
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_key.get(ref_id)
        if record is None:
            description = f"no message with refId {ref_id!r} was accepted"
            return JSONResponse({"description": description}, status_code=404)
        return JSONResponse(record_json(record))

    return router
