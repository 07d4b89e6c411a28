"""Simulate a print partner's job API (our contract).

Routes (HTTP basic auth on all of them):

- ``POST /print-jobs``: ``{"documents": [{"name", "content_type": "application/pdf", "data":
  base64}], "address": {"name", "street", "postal_code", "city", "country"}, "options":
  {"duplex": bool, "colour": bool, "postage": "A" | "B"}}`` and an ``Idempotency-Key`` header.
  ``options`` and each of its fields are optional (simplex, black and white, postage B). HTTP 201
  with ``Location`` and ``{"job_id"}``. A repeated key returns the first job id and counts a
  duplicate. A postal code in the faults' reject or block lists gets 422 ``address_rejected``.
- ``GET /print-jobs/{job_id}``: ``{"job_id", "status", "reason", "updated_at"}``. The status is
  ``received``, then ``printed`` after ``print_delay_s``, then ``posted`` after ``post_delay_s``
  more. A job for a postal code in ``returned_postal_codes``, or one of ``return_rate`` of the
  others, ends ``returned`` (bad address) with a reason instead of ``posted``.
- ``GET /print-jobs/by-idempotency-key/{key}``: the job accepted with this key and its status,
  or 404. Used to resolve a send whose reply was lost.

Errors are ``{"code", "message"}``, plus ``field`` when one field is invalid. Messages never
quote the address, because it is personal data.
"""

from __future__ import annotations

import base64
import binascii
import json
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
    error_response,
    iso_timestamp,
)
from invoice_delivery.simulator.state import ChannelStore, MessageRecord

NAME = "paper"
ADDRESS_FIELDS = ("name", "street", "postal_code", "city", "country")
COUNTRY_CODE = re.compile(r"[A-Z]{2}")
SWEDISH_POSTAL_CODE = re.compile(r"[0-9]{3} ?[0-9]{2}")
POSTAGE_CLASSES = ("A", "B")
DEFAULT_OPTIONS = {"duplex": False, "colour": False, "postage": "B"}
RETURN_REASON = "returned to sender: the address is unknown or incomplete"


class InvalidField(ValueError):
    """Raised by the job checks; carries the JSON path of the invalid field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def normalise_postal_code(postal_code: str) -> str:
    """Return the postal code without spaces, as the configured lists compare it."""
    return postal_code.replace(" ", "")


def _check_documents(documents: Any) -> int:
    """Validate ``documents`` and return the total PDF size in bytes."""
    if not isinstance(documents, list) or not documents:
        raise InvalidField("documents", "documents must be a non-empty list of {name, content_type, data}")
    size = 0
    for index, document in enumerate(documents):
        field = f"documents[{index}]"
        if not isinstance(document, dict):
            raise InvalidField(field, f"{field} must be an object with name, content_type and data")
        if not isinstance(document.get("name"), str) or not document["name"]:
            raise InvalidField(f"{field}.name", f"{field}.name is missing; set a file name such as invoice.pdf")
        if document.get("content_type") != "application/pdf":
            raise InvalidField(
                f"{field}.content_type",
                f"{field}.content_type {document.get('content_type')!r} is not supported; use application/pdf",
            )
        data = document.get("data")
        if not isinstance(data, str) or not data:
            raise InvalidField(f"{field}.data", f"{field}.data is missing; set the PDF as base64")
        try:
            pdf = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise InvalidField(f"{field}.data", f"{field}.data is not valid base64") from None
        if not pdf.startswith(b"%PDF-"):
            raise InvalidField(f"{field}.data", f"{field}.data is not a PDF (it does not start with %PDF-)")
        size += len(pdf)
    return size


def _check_address(address: Any) -> dict[str, str]:
    if not isinstance(address, dict):
        raise InvalidField("address", f"address must be an object with {', '.join(ADDRESS_FIELDS)}")
    for name in ADDRESS_FIELDS:
        value = address.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidField(f"address.{name}", f"address.{name} is missing or empty; the address must be complete")
    country = address["country"]
    if not COUNTRY_CODE.fullmatch(country):
        raise InvalidField("address.country", f"address.country {country!r} is not an ISO 3166 code such as SE")
    if country == "SE" and not SWEDISH_POSTAL_CODE.fullmatch(address["postal_code"]):
        raise InvalidField("address.postal_code", "address.postal_code must have 5 digits in Sweden, such as 903 27")
    return {name: address[name] for name in ADDRESS_FIELDS}


def _check_options(options: Any) -> dict[str, Any]:
    if options is None:
        return dict(DEFAULT_OPTIONS)
    if not isinstance(options, dict):
        raise InvalidField("options", "options must be an object with duplex, colour and postage")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InvalidField(
            f"options.{unknown[0]}", f"options.{unknown[0]} is not supported; use duplex, colour, postage"
        )
    merged = {**DEFAULT_OPTIONS, **options}
    for name in ("duplex", "colour"):
        if not isinstance(merged[name], bool):
            raise InvalidField(f"options.{name}", f"options.{name} must be true or false")
    if merged["postage"] not in POSTAGE_CLASSES:
        raise InvalidField("options.postage", f"options.postage {merged['postage']!r} is invalid; use A or B")
    return merged


def check_job(job: Any) -> tuple[dict[str, str], dict[str, Any], int]:
    """Validate a print job and return its address, its options with defaults and its PDF size.

    Raises:
        InvalidField: a field is missing or invalid; ``field`` is its JSON path.
    """
    if not isinstance(job, dict):
        raise InvalidField("body", "request body must be a JSON object with documents, address and options")
    size = _check_documents(job.get("documents"))
    address = _check_address(job.get("address"))
    options = _check_options(job.get("options"))
    return address, options, size


def _error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"code": kind, "message": message}


def status_json(record: MessageRecord, now: float) -> dict[str, Any]:
    """Return the job's status at ``now``: received, printed, then posted or returned."""
    printed_at, final_at = record.status["printed_at"], record.status["final_at"]
    if now < printed_at:
        status, reason, updated_at = "received", None, record.received_at
    elif now < final_at:
        status, reason, updated_at = "printed", None, printed_at
    else:
        status, updated_at = record.status["outcome"], final_at
        reason = RETURN_REASON if status == "returned" else None
    return {"job_id": record.message_id, "status": status, "reason": reason, "updated_at": iso_timestamp(updated_at)}


def record_json(record: MessageRecord, now: float) -> dict[str, Any]:
    """Return the by-idempotency-key lookup body: the job's options, size and current status."""
    return {
        **status_json(record, now),
        "idempotency_key": record.idempotency_key,
        "documents": record.body["documents"],
        "options": record.body["options"],
        "received_at": iso_timestamp(record.received_at),
    }


class PaperGateway:
    """Validation, deduplication and status of print jobs."""

    def __init__(self, sim: SimulatorContext) -> None:
        self.sim = sim
        self.config = sim.config.paper
        self.returned_postal_codes = {normalise_postal_code(code) for code in self.config.returned_postal_codes}

    @property
    def store(self) -> ChannelStore:
        return self.sim.state.channel(NAME)

    def authenticate(self, request: Request) -> JSONResponse | None:
        """Return a 401 response unless the request carries the configured basic credentials."""
        if credentials_match(basic_credentials(request), self.config.username, self.config.password):
            return None
        response = error_response(
            401, "unauthorized", "missing or invalid HTTP basic credentials; use paper.username and password"
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="paper"'
        return response

    def submit(self, job: Any, idempotency_key: str | None) -> JSONResponse:
        """Validate, deduplicate and accept one print job."""
        store = self.store
        try:
            address, options, size = check_job(job)
        except InvalidField as exc:
            store.stats.rejected += 1
            return error_response(400, "invalid_field", str(exc), exc.field)

        existing = store.by_key.get(idempotency_key) if idempotency_key is not None else None
        if existing is not None:
            store.stats.duplicates_offered += 1
            return self._created(existing.message_id, replayed=True)

        postal_code = normalise_postal_code(address["postal_code"])
        rejection = self.sim.faults.rejection(NAME, postal_code)
        if rejection is not None:
            store.stats.rejected += 1
            store.stats.faults_injected[f"{rejection}_recipient"] += 1
            return error_response(422, "address_rejected", "the print partner does not deliver to this address")

        body = {
            "documents": [document["name"] for document in job["documents"]],
            "pdf_bytes": size,
            "address": address,
            "options": options,
        }
        record = self._accept(body, postal_code, idempotency_key)
        return self._created(record.message_id, replayed=False)

    def _accept(self, body: dict[str, Any], postal_code: str, idempotency_key: str | None) -> MessageRecord:
        now = time.time()
        returned = self.sim.outcome_rng(NAME).random() < self.config.return_rate
        printed_at = now + self.config.print_delay_s
        record = MessageRecord(
            channel=NAME,
            message_id=f"job-{secrets.token_hex(8)}",
            idempotency_key=idempotency_key,
            recipient=postal_code,
            received_at=now,
            body=body,
            status={
                "printed_at": printed_at,
                "final_at": printed_at + self.config.post_delay_s,
                # NOTE: real returned mail comes back after posting. Here "returned" replaces
                # "posted", so that a job reported posted (delivered) never changes again.
                "outcome": "returned" if returned or postal_code in self.returned_postal_codes else "posted",
            },
        )
        self.store.accept(record)
        return record

    @staticmethod
    def _created(job_id: str, replayed: bool) -> JSONResponse:
        headers = {"Location": f"/print-jobs/{job_id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse({"job_id": job_id}, status_code=201, headers=headers)


async def _read_json(request: Request) -> tuple[Any, JSONResponse | None]:
    try:
        return json.loads(await request.body()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, error_response(400, "invalid_json", f"request body is not valid JSON: {exc}", "body")


def build_router(sim: SimulatorContext) -> APIRouter:
    """Create the print job routes on top of the shared simulator context."""
    gateway = PaperGateway(sim)
    router = APIRouter(prefix="/print-jobs", tags=["paper"])

    async def enter(request: Request, route: str) -> JSONResponse | float:
        gateway.store.stats.requests += 1
        denied = gateway.authenticate(request)
        if denied is not None:
            return denied
        return await sim.faults.before_request(NAME, gateway.store.stats, route, _error_body)

    @router.post("")
    async def create_job(request: Request) -> JSONResponse:
        """Accept one print job."""
        entered = await enter(request, "send")
        if isinstance(entered, JSONResponse):
            return entered
        job, invalid = await _read_json(request)
        if invalid is not None:
            return invalid
        response = gateway.submit(job, request.headers.get("idempotency-key") or None)
        await sim.faults.after_accept(entered)
        return response

    @router.get("/by-idempotency-key/{idempotency_key}")
    async def job_by_idempotency_key(idempotency_key: str, request: Request) -> JSONResponse:
        """Return the job accepted with this Idempotency-Key, or 404."""
        entered = await enter(request, "other")
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_key.get(idempotency_key)
        if record is None:
            return error_response(
                404, "job_not_found", f"no print job was accepted with Idempotency-Key {idempotency_key!r}"
            )
        return JSONResponse(record_json(record, time.time()))

    @router.get("/{job_id}")
    async def job_status(job_id: str, request: Request) -> JSONResponse:
        """Return the status of one print job."""
        entered = await enter(request, "other")
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_id.get(job_id)
        if record is None:
            return error_response(404, "job_not_found", f"no print job with id {job_id!r}")
        return JSONResponse(status_json(record, time.time()))

    return router
