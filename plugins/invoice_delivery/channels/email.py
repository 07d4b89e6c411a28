"""E-mail client: SMTP submission with smtplib in worker threads, lookup over the gateway's HTTP route.

The connection's host and port are the SMTP server's, and its scheme (the connection's schema or
extra ``scheme``) is ``smtp`` (plain, or STARTTLS when extra ``starttls`` is true) or ``smtps``
(TLS from the first byte). Extras:

- ``starttls``: upgrade with STARTTLS before AUTH and sending (production).
- ``ca_file``: CA bundle that verifies the server's certificate (default: the system's CAs).
- ``lookup_url``: base URL of the gateway's HTTP lookup route, which :meth:`EmailClient.lookup` needs.
- ``ehlo_hostname``: the name this client sends in EHLO (default: this host's fully qualified name).

With a login, the client authenticates (SMTP AUTH) and uses the same credentials as HTTP basic
auth for the lookup route. It refuses to send credentials in plain text to a host other than
loopback.

Every message carries our idempotency key in its ``Message-ID`` header, ``<KEY@invoice-delivery>``
(see :func:`message_id_header`). The gateway accepts a repeated Message-ID without delivering it
twice, and a lost reply is resolved by looking the Message-ID up. The message id of an accepted
e-mail is its Message-ID without angle brackets, which bounce receipts name as well.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import ipaddress
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

from invoice_delivery.channels.base import (
    GatewayConfig,
    GatewayError,
    RateLimiter,
    RejectedError,
    SendOutcome,
    TransientGatewayError,
    UnansweredError,
    call_with_retries,
    gather_or_cancel,
    get_each,
)

MESSAGE_ID_DOMAIN = "invoice-delivery"
DEFAULT_PORTS = {"smtp": smtplib.SMTP_PORT, "smtps": smtplib.SMTP_SSL_PORT}
# SMTP replies that mean our credentials or configuration are wrong, not the message.
CREDENTIAL_REPLY_CODES = frozenset({530, 534, 535, 538})
CREDENTIAL_STATUSES = (401, 403)
LINE_END = re.compile(rb"\r?\n")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailMessage:
    """One rendered e-mail to one recipient."""

    delivery_id: int
    idempotency_key: str
    mail_from: str  # envelope sender (MAIL FROM)
    rcpt_to: str  # envelope recipient (RCPT TO)
    mime: bytes  # the whole MIME message, rendered elsewhere, with Message-ID: <KEY@invoice-delivery>


def message_id_header(idempotency_key: str) -> str:
    """Return the Message-ID header value that carries ``idempotency_key``, e.g. ``<inv-1@invoice-delivery>``."""
    return f"<{idempotency_key}@{MESSAGE_ID_DOMAIN}>"


def prepare_mime(message: EmailMessage) -> tuple[bytes, str]:
    """Return the MIME bytes with CRLF line ends and the message's Message-ID without brackets.

    SMTP requires CRLF, and smtplib sends bytes unchanged.

    Raises:
        ValueError: the Message-ID is missing or does not carry the delivery's idempotency key.
    """
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message.mime)
    found = str(headers.get("Message-ID", "")).strip()
    expected = message_id_header(message.idempotency_key)
    if found != expected:
        raise ValueError(
            f"e-mail of delivery {message.delivery_id} has Message-ID {found or 'none'!r}, expected {expected!r}; "
            "render the Message-ID with message_id_header(idempotency_key)"
        )
    return LINE_END.sub(b"\r\n", message.mime), expected[1:-1]


def _flag(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reply_error(code: int, reply: bytes | str, command: str) -> GatewayError:
    """Translate an SMTP error reply: credentials → GatewayError, 5xx → rejection, else transient."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    description = f"e-mail {command} failed with SMTP {code} {text}"
    if code in CREDENTIAL_REPLY_CODES:
        return GatewayError(f"{description}; check the connection's login, password and starttls")
    if 500 <= code < 600:
        return RejectedError(description)
    return TransientGatewayError(description)


class _DataTracking:
    """Record in ``data_started`` whether the current transaction has sent the DATA command."""

    data_started = False

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        self.data_started = True
        return super().data(msg)


class _Smtp(_DataTracking, smtplib.SMTP):
    pass


class _SmtpSsl(_DataTracking, smtplib.SMTP_SSL):
    pass


class _SmtpConnection:
    """One SMTP connection that one worker uses for message after message; reopened after errors.

    Its methods block, so they run in worker threads, but never two at once.
    """

    def __init__(self, client: EmailClient) -> None:
        self.client = client
        self._smtp: _Smtp | _SmtpSsl | None = None

    def send(self, message: EmailMessage, mime: bytes) -> None:
        """Submit one message.

        Raises:
            RejectedError: the server refused the message for good (5xx).
            UnansweredError: the connection broke or timed out after the DATA command, so the
                server may have taken the message. Sending it again could deliver it twice.
            TransientGatewayError: a 4xx reply, or a timeout or lost connection before DATA.
            GatewayError: the server rejected our credentials or TLS settings.
        """
        smtp = self._smtp or self._open()
        smtp.data_started = False
        try:
            smtp.sendmail(message.mail_from, [message.rcpt_to], mime)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _reply_error(code, reply, "RCPT TO") from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # the server closes the connection after this reply
                self.close()
            command = {smtplib.SMTPSenderRefused: "MAIL FROM", smtplib.SMTPDataError: "DATA"}.get(type(exc), "SMTP")
            raise _reply_error(exc.smtp_code, exc.smtp_error, command) from exc
        except (smtplib.SMTPException, OSError) as exc:
            data_started = smtp.data_started
            self.close()
            description = f"e-mail submission failed: {type(exc).__name__}: {exc}"
            if data_started:
                # The server may have taken the message before the connection broke.
                raise UnansweredError(f"{description} (after DATA)") from exc
            raise TransientGatewayError(f"{description} (before DATA)") from exc

    def _open(self) -> _Smtp | _SmtpSsl:
        client = self.client
        smtp: _Smtp | _SmtpSsl | None = None
        try:
            if client.implicit_tls:
                smtp = _SmtpSsl(
                    client.host,
                    client.port,
                    local_hostname=client.ehlo_hostname,
                    timeout=client.config.timeout_s,
                    context=client.tls_context,
                )
            else:
                smtp = _Smtp(
                    client.host, client.port, local_hostname=client.ehlo_hostname, timeout=client.config.timeout_s
                )
                if client.starttls:
                    smtp.starttls(context=client.tls_context)
            if client.config.login:
                smtp.login(client.config.login, client.config.password or "")
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError) as exc:
            _quietly_close(smtp)
            raise GatewayError(
                f"e-mail connection to {client.host}:{client.port} failed: {exc}; "
                "check the connection's login, password, starttls and ca_file"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _quietly_close(smtp)
            raise TransientGatewayError(
                f"e-mail connection to {client.host}:{client.port} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._smtp = smtp
        return smtp

    def close(self) -> None:
        """Send QUIT if the connection is open, and forget it."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                _quietly_close(smtp)


def _quietly_close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass


class EmailClient:
    """Submit e-mails over SMTP, one connection per worker, with bounded concurrency and the rate limit."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        parts = urlsplit(config.base_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                f"e-mail gateway URL {config.base_url!r} is not smtp://host:port or smtps://host:port; "
                "set the connection's schema (or extra 'scheme') to smtp or smtps"
            )
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = _flag(config.extra.get("starttls", False))
        self.ehlo_hostname = config.extra.get("ehlo_hostname") or None
        self.lookup_url = config.extra.get("lookup_url") or None
        cafile = config.extra.get("ca_file") or None
        self.tls_context = ssl.create_default_context(cafile=cafile) if self.implicit_tls or self.starttls else None
        if config.login and self.tls_context is None and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to send SMTP credentials in plain text to {self.host}; "
                "set extra 'starttls' to true or use the smtps scheme"
            )
        self.limiter = RateLimiter(config.rate_limit_per_s)

    async def send(self, messages: list[EmailMessage]) -> list[SendOutcome]:
        """Submit every message and return one outcome each, in order.

        A 5xx reply is a rejection with the server's reply as reason. An outcome with neither
        message id nor reason is unresolved, so the server may or may not have the message:
        either 4xx replies, timeouts or lost connections lasted through the retries, or the
        connection broke after the DATA command, which is never retried in place.

        Raises:
            ValueError: a message's Message-ID does not carry its idempotency key; nothing was sent.
            GatewayError: the server rejected our credentials or TLS settings. The outcomes of
                messages sent before are lost, so their deliveries stay claimed.
        """
        prepared = [prepare_mime(message) for message in messages]
        outcomes: list[SendOutcome | None] = [None] * len(messages)
        pending = iter(enumerate(messages))
        errors: list[TransientGatewayError] = []

        async def worker() -> None:
            connection = _SmtpConnection(self)
            try:
                # The workers share one iterator, so each message goes to exactly one of them.
                for index, message in pending:
                    await self.limiter.acquire()
                    mime, message_id = prepared[index]
                    outcomes[index] = await self._send_one(connection, message, mime, message_id, errors)
            finally:
                await asyncio.to_thread(connection.close)

        workers = min(self.config.concurrency, len(messages))
        await gather_or_cancel(worker() for _ in range(workers))
        if errors:
            log.warning(
                "%d of %d e-mail submissions unresolved (after up to %d attempts; a reply lost after DATA is "
                "not retried; last error: %s); their deliveries stay claimed and are looked up before any resend",
                len(errors),
                len(messages),
                self.config.max_attempts,
                errors[-1],
            )
        return [outcome for outcome in outcomes if outcome is not None]

    async def _send_one(
        self,
        connection: _SmtpConnection,
        message: EmailMessage,
        mime: bytes,
        message_id: str,
        errors: list[TransientGatewayError],
    ) -> SendOutcome:
        try:
            await call_with_retries(self.config, "e-mail submission", asyncio.to_thread, connection.send, message, mime,
                                    retry_unanswered=False)
        except RejectedError as exc:
            return SendOutcome(message.delivery_id, False, reason=str(exc))
        except TransientGatewayError as exc:
            errors.append(exc)
            return SendOutcome(message.delivery_id, False)
        return SendOutcome(message.delivery_id, True, message_id=message_id)

    async def lookup(self, keys: list[str]) -> dict[str, str | None]:
        """Return ``{idempotency key: Message-ID or None}``; None when the gateway never recorded the key.

        Raises:
            ValueError: the connection has no extra ``lookup_url``.
            TransientGatewayError: the lookup route was unreachable or failed on every attempt.
            GatewayError: the lookup route rejected the credentials (401, 403).
        """
        if not self.lookup_url:
            # NOTE: plain SMTP has no way to ask for a message; only gateways with an HTTP API
            # (the simulator, ESPs) can resolve a lost reply.
            raise ValueError("e-mail lookup needs the connection's extra 'lookup_url', the gateway's HTTP base URL")
        auth = (self.config.login, self.config.password or "") if self.config.login else None
        paths = {key: f"/email/messages/by-message-id/{quote(key, safe='')}" for key in keys}
        async with httpx.AsyncClient(
            base_url=self.lookup_url,
            auth=auth,
            timeout=self.config.timeout_s,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        ) as client:
            replies = await get_each(self.config, client, paths, "e-mail lookup", check=_check_lookup_credentials)
        return {key: None if reply.status_code == 404 else str(reply.json()["message_id"])
                for key, reply in replies.items()}


def _check_lookup_credentials(response: httpx.Response, operation: str) -> None:
    if response.status_code in CREDENTIAL_STATUSES:
        raise GatewayError(
            f"{operation}: the gateway rejected the credentials with HTTP {response.status_code}; "
            "check the connection's login and password"
        )
