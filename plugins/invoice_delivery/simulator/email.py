"""Simulate an e-mail gateway: a real SMTP server (aiosmtpd) on its own loopback port.

The SMTP server listens on the simulator's host at ``email.smtp_port`` and starts and stops with
the application. It behaves as a submission server:

- ``AUTH PLAIN`` and ``AUTH LOGIN`` with ``email.username`` and ``email.password``, required
  only when ``email.auth_required`` is set. With ``tls_cert_file`` and ``tls_key_file`` the server
  offers STARTTLS and allows AUTH only after it. Without them AUTH works in plain text, which is
  acceptable on loopback only.
- ``RCPT TO`` a recipient in the faults' ``reject_recipients`` gets ``550 5.1.1``, one in
  ``block_recipients`` ``550 5.7.1``. Replies never quote the address.
- ``DATA`` needs a ``Message-ID`` header (``550 5.6.0`` otherwise). The Message-ID carries our
  idempotency key as ``<KEY@invoice-delivery>``: a repeated Message-ID is accepted with 250 and
  counted as a duplicate, but not recorded or delivered twice. A new message gets
  ``250 2.0.0 Ok: queued as QUEUE_ID``.
- Injected 429, 5xx and timeout faults apply to ``DATA`` and become ``451`` temporary failures
  (4.7.1, 4.3.0 and 4.4.2). An injected timeout delays the reply by ``timeout_hold_s`` first.

HTTP route (basic auth with ``email.username`` and ``email.password``; our contract):

- ``GET /email/messages/by-message-id/{message_id}``: the message recorded with this Message-ID,
  or 404. ``message_id`` is the Message-ID without angle brackets, or only the idempotency key.

Receipts (ESP-webhook style, our contract), signed, after the receipt delay: ``{"event":
"delivered" | "bounce", "message_id", "queue_id", "bounce_type": "hard" | "soft" | null,
"status" (enhanced status code), "reason", "timestamp"}``. ``hard_bounce_rate`` and
``soft_bounce_rate`` set the share of bounces.

aiosmtpd's ``Controller`` runs the SMTP sessions on a thread with its own event loop. The handler
passes every step to the application's event loop, where the store, the faults and the receipts
live, so that they need no locks.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Coroutine
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from invoice_delivery.simulator.context import (
    SimulatorContext,
    basic_credentials,
    credentials_match,
    error_response,
    iso_timestamp,
)
from invoice_delivery.simulator.faults import InjectedFault
from invoice_delivery.simulator.state import ChannelStore, MessageRecord

NAME = "email"
MESSAGE_ID_DOMAIN = "invoice-delivery"
START_TIMEOUT_S = 10.0
TEXT_PREVIEW_CHARS = 10_000

# HTTP status of an injected fault -> SMTP reply prefix of the same meaning.
FAULT_REPLIES = {429: "451 4.7.1", 504: "451 4.4.2"}
SERVER_ERROR_REPLY = "451 4.3.0"

# Bounce type -> (enhanced status code, reason) of the receipt.
RECEIPT_OUTCOMES = {
    None: ("2.0.0", "250 2.0.0 accepted by the recipient's mail server"),
    "hard": ("5.1.1", "550 5.1.1 the recipient's mailbox does not exist"),
    "soft": ("4.2.2", "452 4.2.2 the recipient's mailbox is full"),
}

T = TypeVar("T")
log = logging.getLogger(__name__)


class _LoginDataWarningFilter(logging.Filter):
    """Drop the warning that aiosmtpd 1.4 logs on every successful AUTH.

    aiosmtpd itself sets the deprecated ``Session.login_data`` after AUTH, so the warning is not
    about this code.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


def normalise_message_id(value: str) -> str:
    """Return a Message-ID without surrounding whitespace and angle brackets."""
    return value.strip().removeprefix("<").removesuffix(">").strip()


def idempotency_key_of(message_id: str) -> str:
    """Return the idempotency key that a Message-ID carries: the part before ``@invoice-delivery``.

    A Message-ID of another domain is its own key.
    """
    message_id = normalise_message_id(message_id)
    return message_id.removesuffix(f"@{MESSAGE_ID_DOMAIN}")


def _error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"code": kind, "message": message}


def _fault_reply(fault: InjectedFault) -> str:
    message = json.loads(bytes(fault.response.body))["message"]
    prefix = FAULT_REPLIES.get(fault.response.status_code, SERVER_ERROR_REPLY)
    return f"{prefix} {message}"


def summarise(mail_from: str, rcpt_tos: list[str], content: bytes, parsed: EmailMessage) -> dict[str, Any]:
    """Return what ``/_sim/messages`` lists of one message: envelope, headers and MIME structure."""
    leaves = [part for part in parsed.walk() if not part.is_multipart()]
    has_pdf_attachment = any(
        part.get_content_type() == "application/pdf"
        and part.get_content_disposition() == "attachment"
        and (part.get_payload(decode=True) or b"").startswith(b"%PDF-")
        for part in leaves
    )
    text_part = parsed.get_body(preferencelist=("plain",))
    text = text_part.get_content().replace("\r\n", "\n")[:TEXT_PREVIEW_CHARS] if text_part is not None else None
    return {
        "mail_from": mail_from,
        "rcpt_to": rcpt_tos,
        "from": str(parsed.get("From", "")),
        "to": str(parsed.get("To", "")),
        "subject": str(parsed.get("Subject", "")),
        "message_id": normalise_message_id(str(parsed.get("Message-ID", ""))),
        "size": len(content),
        "content_types": [part.get_content_type() for part in leaves],
        "has_pdf_attachment": has_pdf_attachment,
        "text": text,
    }


def record_json(record: MessageRecord) -> dict[str, Any]:
    """Return the by-message-id lookup body of one recorded message."""
    return {
        "message_id": record.message_id,
        "idempotency_key": record.idempotency_key,
        "queue_id": record.body["queue_id"],
        "status": record.status["status"],
        "bounce_type": record.status["bounce_type"],
        "received_at": iso_timestamp(record.received_at),
        "updated_at": iso_timestamp(record.status["updated_at"]),
    }


class EmailGateway:
    """Recipient checks, deduplication and recording of SMTP transactions, on the application's loop."""

    def __init__(self, sim: SimulatorContext) -> None:
        self.sim = sim
        self.config = sim.config.email
        sim.receipts.register(NAME, self.config.receipts, self.config.webhook_secret)

    @property
    def store(self) -> ChannelStore:
        return self.sim.state.channel(NAME)

    async def begin_transaction(self) -> None:
        """Count one SMTP mail transaction (a MAIL command) as a request."""
        self.store.stats.requests += 1

    async def check_recipient(self, address: str) -> str | None:
        """Return a 550 reply if the faults reject this recipient, else None."""
        rejection = self.sim.faults.rejection(NAME, address)
        if rejection is None:
            return None
        self.store.stats.rejected += 1
        self.store.stats.faults_injected[f"{rejection}_recipient"] += 1
        if rejection == "block":
            return "550 5.7.1 Recipient address rejected: delivery to this recipient is blocked"
        return "550 5.1.1 Recipient address rejected: no such user"

    async def receive(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
        """Apply the faults to one DATA command, then record the message; return the SMTP reply."""
        try:
            hold_s = await self.sim.faults.before_request(NAME, self.store.stats, "send", _error_body)
        except InjectedFault as fault:
            return _fault_reply(fault)
        async with self.sim.receipts.early_receipts_before_reply():
            reply = self._process(mail_from, rcpt_tos, content)
        await self.sim.faults.after_accept(hold_s)
        return reply

    def _process(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
        store = self.store
        parsed = BytesParser(policy=email.policy.default).parsebytes(content)
        assert isinstance(parsed, EmailMessage)
        message_id = normalise_message_id(str(parsed.get("Message-ID", "")))
        if not message_id:
            store.stats.rejected += 1
            return f"550 5.6.0 Message-ID header is missing; set Message-ID: <idempotency-key@{MESSAGE_ID_DOMAIN}>"

        key = idempotency_key_of(message_id)
        existing = store.by_key.get(key)
        if existing is not None:
            store.stats.duplicates_offered += 1
            return f"250 2.0.0 Ok: duplicate Message-ID, already queued as {existing.body['queue_id']}"

        record = self._accept(message_id, key, mail_from, rcpt_tos, content, parsed)
        return f"250 2.0.0 Ok: queued as {record.body['queue_id']}"

    def _accept(
        self,
        message_id: str,
        key: str,
        mail_from: str,
        rcpt_tos: list[str],
        content: bytes,
        parsed: EmailMessage,
    ) -> MessageRecord:
        now = time.time()
        body = summarise(mail_from, rcpt_tos, content, parsed)
        body["queue_id"] = secrets.token_hex(6).upper()
        record = MessageRecord(
            channel=NAME,
            message_id=message_id,
            idempotency_key=key,
            recipient=", ".join(rcpt_tos),
            received_at=now,
            body=body,
            status={"status": "queued", "bounce_type": None, "updated_at": now},
        )
        self.store.accept(record)
        bounce_type = self._draw_bounce()
        self.sim.receipts.schedule(NAME, lambda: self._receipt(record, bounce_type))
        return record

    def _draw_bounce(self) -> str | None:
        draw = self.sim.outcome_rng(NAME).random()
        if draw < self.config.hard_bounce_rate:
            return "hard"
        if draw < self.config.hard_bounce_rate + self.config.soft_bounce_rate:
            return "soft"
        return None

    @staticmethod
    def _receipt(record: MessageRecord, bounce_type: str | None) -> dict[str, Any]:
        """Mark the message delivered or bounced and return the receipt payload."""
        now = time.time()
        status_code, reason = RECEIPT_OUTCOMES[bounce_type]
        status = "delivered" if bounce_type is None else "bounced"
        record.status.update(status=status, bounce_type=bounce_type, updated_at=now)
        return {
            "event": "delivered" if bounce_type is None else "bounce",
            "message_id": record.message_id,
            "queue_id": record.body["queue_id"],
            "bounce_type": bounce_type,
            "status": status_code,
            "reason": reason,
            "timestamp": iso_timestamp(now),
        }


class SmtpHandler:
    """aiosmtpd handler: runs on the SMTP thread and passes each step to the application's loop."""

    def __init__(self, gateway: EmailGateway, app_loop: asyncio.AbstractEventLoop) -> None:
        self.gateway = gateway
        self.app_loop = app_loop

    async def _on_app_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.app_loop))

    async def handle_MAIL(  # noqa: N802 - name fixed by aiosmtpd
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        await self._on_app_loop(self.gateway.begin_transaction())
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - name fixed by aiosmtpd
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = await self._on_app_loop(self.gateway.check_recipient(address))
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        return await self._on_app_loop(self.gateway.receive(envelope.mail_from or "", list(envelope.rcpt_tos), content))


class SmtpServer:
    """The e-mail channel's SMTP server, started and stopped with the application."""

    def __init__(self, sim: SimulatorContext, gateway: EmailGateway) -> None:
        self.sim = sim
        self.gateway = gateway
        self.config = sim.config.email
        self._controller: Controller | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Check AUTH PLAIN or LOGIN credentials; runs on the SMTP thread and reads only the configuration."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        offered = (auth_data.login.decode("utf-8", "replace"), auth_data.password.decode("utf-8", "replace"))
        # handled=False lets aiosmtpd send its 535 reply on failure.
        return AuthResult(success=credentials_match(offered, self.config.username, self.config.password), handled=False)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert_file is None or self.config.tls_key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
        return context

    async def start(self) -> None:
        """Start listening; raise RuntimeError naming the port if that fails."""
        _quiet_smtp_log()
        host, port = self.sim.config.host, self.config.smtp_port
        hint = "free the port or choose another with email.smtp_port or --smtp-port"
        try:
            # aiosmtpd reports a busy port only after its whole ready_timeout, so probe it first.
            _probe_port(host, port)
        except OSError as exc:
            raise RuntimeError(f"failed to start the SMTP server on {host}:{port} ({exc.strerror}); {hint}") from exc

        controller = self._controller_for(host, port)
        try:
            await asyncio.to_thread(controller.start)
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"failed to start the SMTP server on {host}:{port} ({exc}); {hint}") from exc
        self._controller = controller
        log.info("SMTP server of the email channel listens on %s:%d", host, port)

    def _controller_for(self, host: str, port: int) -> Controller:
        tls_context = self._tls_context()
        return Controller(
            SmtpHandler(self.gateway, asyncio.get_running_loop()),
            hostname=host,
            port=port,
            ready_timeout=START_TIMEOUT_S,
            server_hostname=self.config.server_hostname,
            authenticator=self._authenticate,
            auth_required=self.config.auth_required,
            auth_require_tls=tls_context is not None,
            tls_context=tls_context,
        )

    async def stop(self) -> None:
        """Stop the SMTP thread and close its port."""
        controller, self._controller = self._controller, None
        if controller is not None:
            await asyncio.to_thread(controller.stop)


def _quiet_smtp_log() -> None:
    """Raise aiosmtpd's log level to WARNING, because at INFO it logs every sender and recipient address."""
    smtp_log = logging.getLogger("mail.log")
    smtp_log.setLevel(logging.WARNING)
    if not any(isinstance(item, _LoginDataWarningFilter) for item in smtp_log.filters):
        smtp_log.addFilter(_LoginDataWarningFilter())


def _probe_port(host: str, port: int) -> None:
    """Raise OSError if ``host:port`` cannot be bound the way asyncio's server binds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host.strip("[]"), port))


def build_router(sim: SimulatorContext) -> APIRouter:
    """Create the e-mail lookup route and register the SMTP server as a service."""
    gateway = EmailGateway(sim)
    sim.services.append(SmtpServer(sim, gateway))
    router = APIRouter(prefix="/email", tags=["email"])

    @router.get("/messages/by-message-id/{message_id}")
    async def message_by_message_id(message_id: str, request: Request) -> JSONResponse:
        """Return the message recorded with this Message-ID or idempotency key, or 404."""
        gateway.store.stats.requests += 1
        if not credentials_match(basic_credentials(request), gateway.config.username, gateway.config.password):
            response = error_response(
                401, "unauthorized", "missing or invalid HTTP basic credentials; use email.username and password"
            )
            response.headers["WWW-Authenticate"] = 'Basic realm="email"'
            return response
        await sim.faults.before_request(NAME, gateway.store.stats, "other", _error_body)
        record = gateway.store.by_key.get(idempotency_key_of(message_id))
        if record is None:
            return error_response(404, "message_not_found", f"no message was recorded with Message-ID {message_id!r}")
        return JSONResponse(record_json(record))

    return router
