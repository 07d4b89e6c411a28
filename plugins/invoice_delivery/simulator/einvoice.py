"""Simulate a Peppol access point's submission API (our contract, because access points differ).

Routes (HTTP basic auth on all of them):

- ``POST /documents``: the body is a UBL 2.1 ``Invoice`` or ``CreditNote`` (Peppol BIS Billing
  3.0) with ``Content-Type: application/xml``. Headers ``X-Peppol-Sender`` and
  ``X-Peppol-Receiver`` carry participant ids ``scheme:value`` of the schemes in
  :data:`PARTICIPANT_SCHEMES`, and ``Idempotency-Key`` our idempotency key. HTTP 202 with
  ``{"transmission_id"}``. A repeated key returns the first transmission id and counts a
  duplicate. A receiver in ``einvoice.unknown_receivers`` or rejected by the faults gets 404
  ``receiver_not_registered``.
- ``GET /documents/{transmission_id}/status``: ``{"transmission_id", "status", "reasons",
  "updated_at"}``, modelled on Peppol's message level status: ``AB`` (acknowledged) at once, then
  after ``decision_delay_s`` ``AP`` (accepted) or, for ``rejection_rate`` of the documents, ``RE``
  (rejected) with ``rejection_reasons``.
- ``GET /documents/by-idempotency-key/{key}``: the document accepted with this key and its
  status, or 404. Used to resolve a send whose reply was lost.

Errors are ``{"code", "message"}``, plus ``field`` when one header or the body is invalid.

Each status change also goes, signed, to the e-invoice receipt URL after the receipt delay:
``{"transmission_id", "status", "reasons", "document_id", "sender", "receiver", "timestamp"}``,
where ``document_id`` is the document's ``cbc:ID`` and ``timestamp`` the time of the change.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from lxml import etree
from stdnum import ean
from stdnum.dk import cvr
from stdnum.fi import ytunnus
from stdnum.no import orgnr as no_orgnr
from stdnum.se import orgnr as se_orgnr

from invoice_delivery.simulator.context import (
    SimulatorContext,
    basic_credentials,
    credentials_match,
    error_response,
    iso_timestamp,
)
from invoice_delivery.simulator.state import ChannelStore, MessageRecord

NAME = "einvoice"
INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CBC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
DOCUMENT_TYPES = {f"{{{INVOICE_NS}}}Invoice": "Invoice", f"{{{CREDIT_NOTE_NS}}}CreditNote": "CreditNote"}
SENDER_HEADER = "X-Peppol-Sender"
RECEIVER_HEADER = "X-Peppol-Receiver"


@dataclass(frozen=True)
class ParticipantScheme:
    """One participant identifier scheme (an ISO 6523 ICD code) and the form of its values."""

    name: str
    pattern: re.Pattern[str]
    form: str
    has_valid_check_digit: Callable[[str], bool]


# Check digits as python-stdnum computes them: Luhn (0007), mod 11 (0192, 0184, 0037), GS1 (0088).
PARTICIPANT_SCHEMES = {
    "0007": ParticipantScheme("Swedish organisation number", re.compile(r"[0-9]{10}"), "10 digits", se_orgnr.is_valid),
    "0192": ParticipantScheme("Norwegian organisation number", re.compile(r"[0-9]{9}"), "9 digits", no_orgnr.is_valid),
    "0088": ParticipantScheme("Global Location Number (GLN)", re.compile(r"[0-9]{13}"), "13 digits", ean.is_valid),
    "0184": ParticipantScheme("Danish CVR number", re.compile(r"[0-9]{8}"), "8 digits", cvr.is_valid),
    "0037": ParticipantScheme(
        "Finnish business id (Y-tunnus)", re.compile(r"[0-9]{7}-?[0-9]"), "7 digits and a check digit", ytunnus.is_valid
    ),
}
# lxml parser that never loads DTDs or external entities and never touches the network.
XML_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)


class InvalidSubmission(ValueError):
    """Raised by the submission checks; carries the header or body part that is invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_participant_id(value: str | None, header: str, check_digit: bool = True) -> str:
    """Return a valid participant id ``scheme:value`` from ``header``, or raise InvalidSubmission."""
    if not value:
        raise InvalidSubmission(
            header, f"{header} is missing; set the participant id as scheme:value, such as 0007:<organisation number>"
        )
    scheme_code, separator, identifier = value.strip().partition(":")
    scheme = PARTICIPANT_SCHEMES.get(scheme_code)
    if not separator or scheme is None:
        raise InvalidSubmission(
            header,
            f"{header} {value!r} does not start with a supported scheme; "
            f"use scheme:value with scheme {', '.join(PARTICIPANT_SCHEMES)}",
        )
    if not scheme.pattern.fullmatch(identifier):
        raise InvalidSubmission(
            header, f"{header} {value!r} is invalid: scheme {scheme_code} ({scheme.name}) takes {scheme.form}"
        )
    if check_digit and not scheme.has_valid_check_digit(identifier):
        raise InvalidSubmission(
            header, f"{header} {value!r} has a wrong check digit for scheme {scheme_code} ({scheme.name})"
        )
    return f"{scheme_code}:{identifier}"


def check_document(xml: bytes) -> tuple[str, str | None]:
    """Return the document type (Invoice or CreditNote) and its ``cbc:ID``, or raise InvalidSubmission."""
    try:
        root = etree.fromstring(xml, XML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidSubmission("body", f"the body is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise InvalidSubmission("body", "the document has a DOCTYPE declaration; this access point accepts no DTDs")
    document_type = DOCUMENT_TYPES.get(root.tag)
    if document_type is None:
        raise InvalidSubmission(
            "body",
            f"root element {root.tag} is not a UBL 2.1 document; "
            f"expected Invoice in {INVOICE_NS} or CreditNote in {CREDIT_NOTE_NS}",
        )
    return document_type, root.findtext(f"{{{CBC_NS}}}ID")


def _error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"code": kind, "message": message}


def status_json(record: MessageRecord, now: float) -> dict[str, Any]:
    """Return the message level status: AB until the decision time, then AP or RE."""
    decided_at = record.status["decided_at"]
    if now < decided_at:
        return {
            "transmission_id": record.message_id,
            "status": "AB",
            "reasons": [],
            "updated_at": iso_timestamp(record.received_at),
        }
    return {
        "transmission_id": record.message_id,
        "status": record.status["final_status"],
        "reasons": list(record.status["reasons"]),
        "updated_at": iso_timestamp(decided_at),
    }


def record_json(record: MessageRecord, now: float) -> dict[str, Any]:
    """Return the by-idempotency-key lookup body: what was sent and its current status."""
    return {
        **status_json(record, now),
        "idempotency_key": record.idempotency_key,
        "document_type": record.body["document_type"],
        "document_id": record.body["document_id"],
        "sender": record.body["sender"],
        "receiver": record.body["receiver"],
        "received_at": iso_timestamp(record.received_at),
    }


class EinvoiceGateway:
    """Validation, deduplication and status of submitted documents."""

    def __init__(self, sim: SimulatorContext) -> None:
        self.sim = sim
        self.config = sim.config.einvoice
        sim.receipts.register(NAME, self.config.receipts, self.config.webhook_secret)

    @property
    def store(self) -> ChannelStore:
        return self.sim.state.channel(NAME)

    def authenticate(self, request: Request) -> JSONResponse | None:
        """Return a 401 response unless the request carries the configured basic credentials."""
        if credentials_match(basic_credentials(request), self.config.username, self.config.password):
            return None
        response = error_response(
            401, "unauthorized", "missing or invalid HTTP basic credentials; use einvoice.username and password"
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="einvoice"'
        return response

    def submit(self, request: Request, xml: bytes) -> JSONResponse:
        """Validate, deduplicate and accept one document."""
        store = self.store
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "application/xml":
            store.stats.rejected += 1
            message = f"Content-Type {content_type or 'none'!r} is not supported; send the UBL as application/xml"
            return error_response(415, "unsupported_media_type", message, "Content-Type")
        check_digit = self.config.check_participant_checksums
        try:
            sender = check_participant_id(request.headers.get(SENDER_HEADER), SENDER_HEADER, check_digit)
            receiver = check_participant_id(request.headers.get(RECEIVER_HEADER), RECEIVER_HEADER, check_digit)
            document_type, document_id = check_document(xml)
        except InvalidSubmission as exc:
            store.stats.rejected += 1
            return error_response(400, "invalid_document", str(exc), exc.field)

        idempotency_key = request.headers.get("idempotency-key") or None
        existing = store.by_key.get(idempotency_key) if idempotency_key is not None else None
        if existing is not None:
            store.stats.duplicates_offered += 1
            return JSONResponse(
                {"transmission_id": existing.message_id}, status_code=202, headers={"Idempotent-Replayed": "true"}
            )

        if self._is_unregistered(receiver):
            store.stats.rejected += 1
            message = f"receiver {receiver} is not registered in the Peppol network for this document type"
            return error_response(404, "receiver_not_registered", message, RECEIVER_HEADER)

        body = {
            "document_type": document_type,
            "document_id": document_id,
            "sender": sender,
            "receiver": receiver,
            "size": len(xml),
        }
        record = self._accept(body, idempotency_key)
        return JSONResponse({"transmission_id": record.message_id}, status_code=202)

    def _is_unregistered(self, receiver: str) -> bool:
        if receiver in self.config.unknown_receivers:
            return True
        rejection = self.sim.faults.rejection(NAME, receiver)
        if rejection is not None:
            self.store.stats.faults_injected[f"{rejection}_recipient"] += 1
            return True
        return False

    def _accept(self, body: dict[str, Any], idempotency_key: str | None) -> MessageRecord:
        now = time.time()
        rejected = self.sim.outcome_rng(NAME).random() < self.config.rejection_rate
        record = MessageRecord(
            channel=NAME,
            message_id=str(uuid.uuid4()),
            idempotency_key=idempotency_key,
            recipient=body["receiver"],
            received_at=now,
            body=body,
            status={
                "decided_at": now + self.config.decision_delay_s,
                "final_status": "RE" if rejected else "AP",
                "reasons": list(self.config.rejection_reasons) if rejected else [],
            },
        )
        self.store.accept(record)
        receipts = self.sim.receipts
        receipts.schedule(NAME, lambda: self._status_receipt(record, "AB", [], record.received_at))
        final_delay = self.config.decision_delay_s + receipts.config(NAME).delay_s
        final_status, reasons, decided_at = (record.status[key] for key in ("final_status", "reasons", "decided_at"))
        receipts.schedule(
            NAME,
            lambda: self._status_receipt(record, final_status, reasons, decided_at),
            final_delay,
            may_arrive_early=False,
        )
        return record

    @staticmethod
    def _status_receipt(record: MessageRecord, status: str, reasons: list[str], changed_at: float) -> dict[str, Any]:
        """Return the receipt payload of one status change."""
        return {
            "transmission_id": record.message_id,
            "status": status,
            "reasons": list(reasons),
            "document_id": record.body["document_id"],
            "sender": record.body["sender"],
            "receiver": record.body["receiver"],
            "timestamp": iso_timestamp(changed_at),
        }


def build_router(sim: SimulatorContext) -> APIRouter:
    """Create the e-invoice routes on top of the shared simulator context."""
    gateway = EinvoiceGateway(sim)
    router = APIRouter(prefix="/documents", tags=["einvoice"])

    async def enter(request: Request, route: str) -> JSONResponse | float:
        gateway.store.stats.requests += 1
        denied = gateway.authenticate(request)
        if denied is not None:
            return denied
        return await sim.faults.before_request(NAME, gateway.store.stats, route, _error_body)

    @router.post("")
    async def submit(request: Request) -> JSONResponse:
        """Accept one UBL document for transmission."""
        entered = await enter(request, "send")
        if isinstance(entered, JSONResponse):
            return entered
        xml = await request.body()
        async with sim.receipts.early_receipts_before_reply():
            response = gateway.submit(request, xml)
        await sim.faults.after_accept(entered)
        return response

    @router.get("/by-idempotency-key/{idempotency_key}")
    async def document_by_idempotency_key(idempotency_key: str, request: Request) -> JSONResponse:
        """Return the document accepted with this Idempotency-Key, or 404."""
        entered = await enter(request, "other")
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_key.get(idempotency_key)
        if record is None:
            message = f"no document was accepted with Idempotency-Key {idempotency_key!r}"
            return error_response(404, "document_not_found", message)
        return JSONResponse(record_json(record, time.time()))

    @router.get("/{transmission_id}/status")
    async def document_status(transmission_id: str, request: Request) -> JSONResponse:
        """Return the message level status of one transmission."""
        entered = await enter(request, "other")
        if isinstance(entered, JSONResponse):
            return entered
        record = gateway.store.by_id.get(transmission_id)
        if record is None:
            return error_response(404, "document_not_found", f"no document with transmission id {transmission_id!r}")
        return JSONResponse(status_json(record, time.time()))

    return router
