"""Simulate a digital mailbox gateway modelled on Kivra's tenant API v2.

Routes:

- ``POST /v2/auth/token``: OAuth2 client credentials (form ``grant_type=client_credentials``,
  HTTP basic ``client_id:client_secret``) -> ``access_token``, ``token_type`` Bearer, ``expires_in``.
- ``POST /v2/tenant/{tenantKey}/usermatch/ssn``: ``{"list": [12-digit personal numbers]}`` ->
  ``{"list": [...]}`` with those who have a mailbox, in request order.
- ``POST /v2/tenant/{tenantKey}/content``: one document for one recipient (``ssn`` or
  ``vat_number``). HTTP 201 with ``Location`` and ``{"key": ...}``. A repeated
  ``Idempotency-Key`` header or an identical payload returns the first key and counts a duplicate.
- ``GET /v2/tenant/{tenantKey}/content/{key}/status``: ``key``, ``status`` (pending, delivered,
  failed), ``delivered_via`` (digital, paper or null) and ``updated_at``. Our contract, shaped
  after Digipost's document status, because the modelled API has no public delivery callback.
- ``GET /v2/tenant/{tenantKey}/content/by-idempotency-key/{key}``: the content accepted with that
  ``Idempotency-Key``, or 404. Our contract, used to resolve a send whose reply was lost.

Every route but the token route needs ``Authorization: Bearer <access_token>``. Errors are JSON
``{"code", "message"}``, plus ``field`` when one field is invalid. Whether a number has a mailbox
follows from :func:`has_mailbox`, so tests can predict it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from invoice_delivery.simulator.config import MailboxConfig
from invoice_delivery.simulator.context import (
    SimulatorContext,
    basic_credentials,
    credentials_match,
    error_response,
    iso_timestamp,
)
from invoice_delivery.simulator.state import ChannelStore, MessageRecord

NAME = "mailbox"
CONTENT_TYPES = ("invoice", "letter")
PERSONAL_NUMBER = re.compile(r"[0-9]{12}")
VAT_NUMBER = re.compile(r"SE[0-9]{10}01")
ACCOUNT = re.compile(r"[0-9]{2,4}-?[0-9]{4}")
OCR_REFERENCE = re.compile(r"[0-9]{2,25}")
PAYMENT_METHODS = {"1": "bankgiro", "2": "plusgiro"}


class InvalidField(ValueError):
    """Raised by the content checks; carries the JSON path of the invalid field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def luhn_valid(digits: str) -> bool:
    """Return whether a digit string ends with a correct Luhn (mod 10) check digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def has_mailbox(number: str, config: MailboxConfig) -> bool:
    """Return whether the personal or VAT number has a mailbox that accepts this sender.

    ``match_deny`` and ``match_allow`` decide first. Otherwise the first 8 bytes of the
    number's SHA-256, read as a fraction of 2**64, must fall below ``match_fraction``. The
    result therefore depends on the number and the configuration only.
    """
    if number in config.match_deny:
        return False
    if number in config.match_allow:
        return True
    digest = hashlib.sha256(number.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < config.match_fraction


def _error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"code": kind, "message": message}


def check_personal_number(value: Any, field: str, check_checksum: bool) -> str:
    """Return a valid 12-digit personal number, or raise InvalidField without quoting the value."""
    if not isinstance(value, str) or not PERSONAL_NUMBER.fullmatch(value):
        raise InvalidField(field, f"{field} must be a personal identity number of 12 digits (YYYYMMDDNNNC)")
    if check_checksum and not luhn_valid(value[2:]):
        raise InvalidField(field, f"{field} has a wrong check digit; the last digit is a Luhn check over digits 3-11")
    return value


def _check_date(value: Any, field: str) -> None:
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be an ISO 8601 date string such as 2025-01-31")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise InvalidField(field, f"{field} {value!r} is not an ISO 8601 date such as 2025-01-31") from None


def _check_timestamp(value: Any, field: str) -> None:
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be an ISO 8601 date or date-time string")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidField(field, f"{field} {value!r} is not an ISO 8601 date or date-time") from None


def _check_recipient(content: dict[str, Any], check_checksum: bool) -> str:
    has_ssn, has_vat = "ssn" in content, "vat_number" in content
    if has_ssn == has_vat:
        raise InvalidField("ssn", "set exactly one of ssn (a person) or vat_number (a business)")
    if has_ssn:
        return check_personal_number(content["ssn"], "ssn", check_checksum)
    vat_number = content["vat_number"]
    if not isinstance(vat_number, str) or not VAT_NUMBER.fullmatch(vat_number):
        raise InvalidField("vat_number", "vat_number must have the form SE + 10 digits + 01, e.g. SE556677889901")
    return vat_number


def _check_subject(content: dict[str, Any], recipient: str) -> None:
    subject = content.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidField("subject", "subject is missing or empty; set a short title without personal data")
    if recipient in subject or recipient[2:] in subject:
        raise InvalidField("subject", "subject contains the recipient's identity number; remove personal data")


def _check_parts(parts: Any) -> None:
    if not isinstance(parts, list) or not parts:
        raise InvalidField("parts", "parts must be a non-empty list of {name, data, content_type}")
    for index, part in enumerate(parts):
        field = f"parts[{index}]"
        if not isinstance(part, dict):
            raise InvalidField(field, f"{field} must be an object with name, data and content_type")
        if not isinstance(part.get("name"), str) or not part["name"]:
            raise InvalidField(f"{field}.name", f"{field}.name is missing; set a file name such as invoice.pdf")
        if part.get("content_type") != "application/pdf":
            raise InvalidField(
                f"{field}.content_type",
                f"{field}.content_type {part.get('content_type')!r} is not supported; use application/pdf",
            )
        _check_pdf_data(part.get("data"), f"{field}.data")


def _check_pdf_data(data: Any, field: str) -> None:
    if not isinstance(data, str) or not data:
        raise InvalidField(field, f"{field} is missing; set the PDF as base64")
    try:
        decoded = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise InvalidField(field, f"{field} is not valid base64") from None
    if not decoded.startswith(b"%PDF-"):
        raise InvalidField(field, f"{field} is not a PDF (it does not start with %PDF-)")


def _check_amount(value: Any, field: str, payable: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidField(field, f'{field} must be a decimal amount such as "1234.50"')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidField(field, f'{field} {value!r} is not a decimal amount such as "1234.50"') from None
    if not amount.is_finite() or amount.as_tuple().exponent < -2:
        raise InvalidField(field, f"{field} {value!r} must be finite with at most 2 decimals")
    if amount < 0 or (payable and amount == 0):
        raise InvalidField(field, f"{field} {value!r} must be greater than 0 when payable is true, never negative")


def _check_payment_option(option: Any, field: str, payable: bool) -> None:
    if not isinstance(option, dict):
        raise InvalidField(field, f"{field} must be an object with due_date, amount, type and reference")
    _check_date(option.get("due_date"), f"{field}.due_date")
    _check_amount(option.get("amount"), f"{field}.amount", payable)
    if option.get("type") != "SE_OCR":
        raise InvalidField(f"{field}.type", f"{field}.type {option.get('type')!r} is not supported; use SE_OCR")
    reference = option.get("reference")
    if not isinstance(reference, str) or not OCR_REFERENCE.fullmatch(reference):
        raise InvalidField(f"{field}.reference", f"{field}.reference must be an OCR number of 2 to 25 digits")
    if not luhn_valid(reference):
        raise InvalidField(f"{field}.reference", f"{field}.reference {reference!r} has a wrong Luhn check digit")


def _check_payment(payment: Any) -> None:
    field = "payment_multiple_options"
    if not isinstance(payment, dict):
        raise InvalidField(
            field, f"{field} is required for type invoice; set payable, currency, method, account, options"
        )
    payable = payment.get("payable")
    if not isinstance(payable, bool):
        raise InvalidField(f"{field}.payable", f"{field}.payable must be true or false")
    if payment.get("currency") != "SEK":
        raise InvalidField(
            f"{field}.currency", f"{field}.currency {payment.get('currency')!r} is not supported; use SEK"
        )
    if payment.get("method") not in PAYMENT_METHODS:
        raise InvalidField(
            f"{field}.method",
            f'{field}.method {payment.get("method")!r} is invalid; use "1" (bankgiro) or "2" (plusgiro)',
        )
    account = payment.get("account")
    if not isinstance(account, str) or not ACCOUNT.fullmatch(account):
        raise InvalidField(f"{field}.account", f"{field}.account must be a giro number such as 5050-1055")
    options = payment.get("options")
    if not isinstance(options, list) or not options:
        raise InvalidField(f"{field}.options", f"{field}.options must be a non-empty list of payment options")
    for index, option in enumerate(options):
        _check_payment_option(option, f"{field}.options[{index}]", payable)


def check_content(content: Any, check_checksum: bool = True) -> str:
    """Validate a content request and return its recipient (personal or VAT number).

    Raises:
        InvalidField: a field is missing or invalid; ``field`` is its JSON path.
    """
    if not isinstance(content, dict):
        raise InvalidField("body", "request body must be a JSON object")
    recipient = _check_recipient(content, check_checksum)
    _check_subject(content, recipient)
    if content.get("type") not in CONTENT_TYPES:
        raise InvalidField("type", f"type {content.get('type')!r} is invalid; use one of {', '.join(CONTENT_TYPES)}")
    _check_timestamp(content.get("generated_at"), "generated_at")
    _check_parts(content.get("parts"))
    if content["type"] == "invoice":
        _check_payment(content.get("payment_multiple_options"))
    elif "payment_multiple_options" in content:
        raise InvalidField("payment_multiple_options", "payment_multiple_options is only allowed with type invoice")
    return recipient


def payload_hash(content: dict[str, Any]) -> str:
    """Return the SHA-256 of the canonical JSON form, which identifies an identical payload."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class MailboxGateway:
    """Tokens, recipient matching and content handling of the mailbox routes."""

    def __init__(self, sim: SimulatorContext) -> None:
        self.sim = sim
        self.config = sim.config.mailbox
        # Access token -> expiry on the monotonic clock. Tokens survive POST /_sim/reset, so a
        # client with a token keeps working across tests.
        self.tokens: dict[str, float] = {}

    @property
    def store(self) -> ChannelStore:
        return self.sim.state.channel(NAME)

    def issue_token(self, request: Request, form: dict[str, list[str]]) -> JSONResponse:
        """Issue an access token for an OAuth2 client-credentials request."""
        grant_type = (form.get("grant_type") or [""])[0]
        if grant_type != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"grant_type {grant_type!r}; use client_credentials",
                },
                status_code=400,
            )
        offered = basic_credentials(request)
        if offered is None and "client_id" in form:
            offered = (form["client_id"][0], (form.get("client_secret") or [""])[0])
        if not credentials_match(offered, self.config.client_id, self.config.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "unknown client_id or wrong client_secret"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="mailbox"'},
            )
        now = time.monotonic()
        self.tokens = {token: expiry for token, expiry in self.tokens.items() if expiry > now}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + self.config.token_ttl_s
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": self.config.token_ttl_s})

    def authorize(self, request: Request, tenant_key: str) -> JSONResponse | None:
        """Return a 401 or 403 response unless a live bearer token is given for the configured tenant."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is None or expires < time.monotonic():
            return JSONResponse(
                {
                    "code": "unauthorized",
                    "message": "missing, unknown or expired bearer token; get one at /v2/auth/token",
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not hmac.compare_digest(tenant_key.encode(), self.config.tenant_key.encode()):
            return error_response(403, "forbidden", f"the token does not grant access to tenant {tenant_key!r}")
        return None

    def match(self, numbers: Any) -> JSONResponse:
        """Return the numbers of a usermatch request that have a mailbox accepting this sender."""
        if not isinstance(numbers, list):
            return error_response(400, "invalid_field", "list must be a list of personal identity numbers", "list")
        try:
            for index, number in enumerate(numbers):
                check_personal_number(number, f"list[{index}]", self.config.check_ssn_checksum)
        except InvalidField as exc:
            return error_response(400, "invalid_field", str(exc), exc.field)
        matched = [number for number in dict.fromkeys(numbers) if has_mailbox(number, self.config)]
        return JSONResponse({"list": matched})

    def submit(self, tenant_key: str, content: Any, idempotency_key: str | None) -> JSONResponse:
        """Validate, deduplicate and accept one content request."""
        store = self.store
        try:
            recipient = check_content(content, self.config.check_ssn_checksum)
        except InvalidField as exc:
            store.stats.rejected += 1
            return error_response(400, "invalid_field", str(exc), exc.field)

        digest = payload_hash(content)
        existing = store.find(idempotency_key, digest)
        if existing is not None:
            store.stats.duplicates_offered += 1
            if idempotency_key is not None:
                # An identical payload under a new key: let a lookup by the new key find it too.
                store.by_key.setdefault(idempotency_key, existing)
            return self._created(tenant_key, existing.message_id, replayed=True)

        refusal = self._recipient_refusal(recipient)
        if refusal is not None:
            store.stats.rejected += 1
            return error_response(404, "recipient_not_found", refusal)

        record = self._accept(content, recipient, idempotency_key, digest)
        return self._created(tenant_key, record.message_id, replayed=False)

    def _recipient_refusal(self, recipient: str) -> str | None:
        rejection = self.sim.faults.rejection(NAME, recipient)
        if rejection is not None:
            self.store.stats.faults_injected[f"{rejection}_recipient"] += 1
            return "the recipient cannot receive content from this sender"
        if not has_mailbox(recipient, self.config):
            return "the recipient has no mailbox or does not accept content from this sender"
        return None

    def _accept(
        self, content: dict[str, Any], recipient: str, idempotency_key: str | None, digest: str
    ) -> MessageRecord:
        now = time.time()
        record = MessageRecord(
            channel=NAME,
            message_id=secrets.token_hex(16),
            idempotency_key=idempotency_key,
            recipient=recipient,
            received_at=now,
            body=content,
            payload_hash=digest,
            status=self._draw_outcome(now + self.config.delivery_delay_s),
        )
        self.store.accept(record)
        return record

    def _draw_outcome(self, final_at: float) -> dict[str, Any]:
        """Draw the final status of new content: failed, or delivered digitally or on paper."""
        rng = self.sim.outcome_rng(NAME)
        failed = rng.random() < self.config.failure_rate
        on_paper = rng.random() < self.config.paper_rate
        if failed:
            return {"outcome": "failed", "delivered_via": None, "final_at": final_at}
        delivered_via = "paper" if on_paper else "digital"
        return {"outcome": "delivered", "delivered_via": delivered_via, "final_at": final_at}

    @staticmethod
    def _created(tenant_key: str, key: str, replayed: bool) -> JSONResponse:
        headers = {"Location": f"/v2/tenant/{tenant_key}/content/{key}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse({"key": key}, status_code=201, headers=headers)


def status_json(record: MessageRecord, now: float) -> dict[str, Any]:
    """Return the content's status: pending until its delivery delay has passed, then final."""
    final_at = record.status["final_at"]
    if now < final_at:
        return {
            "key": record.message_id,
            "status": "pending",
            "delivered_via": None,
            "updated_at": iso_timestamp(record.received_at),
        }
    return {
        "key": record.message_id,
        "status": record.status["outcome"],
        "delivered_via": record.status["delivered_via"],
        "updated_at": iso_timestamp(final_at),
    }


def record_json(record: MessageRecord, now: float) -> dict[str, Any]:
    """Return the by-idempotency-key lookup body: the key, what was sent, and the current status."""
    return {
        **status_json(record, now),
        "idempotency_key": record.idempotency_key,
        "type": record.body.get("type"),
        "created_at": iso_timestamp(record.received_at),
    }


async def _read_json(request: Request) -> tuple[Any, JSONResponse | None]:
    try:
        return json.loads(await request.body()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, error_response(400, "invalid_json", f"request body is not valid JSON: {exc}", "body")


def build_router(sim: SimulatorContext) -> APIRouter:
    """Create the mailbox routes on top of the shared simulator context."""
    gateway = MailboxGateway(sim)
    router = APIRouter(prefix="/v2", tags=["mailbox"])

    async def enter(request: Request, route: str, tenant_key: str | None) -> JSONResponse | float:
        gateway.store.stats.requests += 1
        if tenant_key is not None:
            denied = gateway.authorize(request, tenant_key)
            if denied is not None:
                return denied
        return await sim.faults.before_request(NAME, gateway.store.stats, route, _error_body)

    @router.post("/auth/token")
    async def token(request: Request) -> JSONResponse:
        """Issue an access token for the client credentials grant."""
        entered = await enter(request, "other", None)
        if isinstance(entered, JSONResponse):
            return entered
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        return gateway.issue_token(request, form)

    @router.post("/tenant/{tenant_key}/usermatch/ssn")
    async def usermatch(tenant_key: str, request: Request) -> JSONResponse:
        """Return the personal numbers that have a mailbox accepting this sender."""
        entered = await enter(request, "other", tenant_key)
        if isinstance(entered, JSONResponse):
            return entered
        body, invalid = await _read_json(request)
        if invalid is not None:
            return invalid
        return gateway.match(body.get("list") if isinstance(body, dict) else None)

    @router.post("/tenant/{tenant_key}/content")
    async def create_content(tenant_key: str, request: Request) -> JSONResponse:
        """Accept one document for one recipient."""
        entered = await enter(request, "send", tenant_key)
        if isinstance(entered, JSONResponse):
            return entered
        body, invalid = await _read_json(request)
        if invalid is not None:
            return invalid
        response = gateway.submit(tenant_key, body, request.headers.get("idempotency-key") or None)
        await sim.faults.after_accept(entered)
        return response

    @router.get("/tenant/{tenant_key}/content/by-idempotency-key/{idempotency_key}")
    async def content_by_idempotency_key(tenant_key: str, idempotency_key: str, request: Request) -> JSONResponse:
        """Return the content accepted with this Idempotency-Key, or 404."""
        entered = await enter(request, "other", tenant_key)
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_key.get(idempotency_key)
        if record is None:
            message = f"no content was accepted with Idempotency-Key {idempotency_key!r}"
            return error_response(404, "content_not_found", message)
        return JSONResponse(record_json(record, time.time()))

    @router.get("/tenant/{tenant_key}/content/{key}/status")
    async def content_status(tenant_key: str, key: str, request: Request) -> JSONResponse:
        """Return the delivery status of one content key."""
        entered = await enter(request, "other", tenant_key)
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_id.get(key)
        if record is None:
            return error_response(404, "content_not_found", f"no content with key {key!r}")
        return JSONResponse(status_json(record, time.time()))

    return router
