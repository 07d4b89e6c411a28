"""Configure the gateway simulator: credentials, receipts, outcomes and faults per channel.

Configuration comes from a JSON file shaped like :class:`SimulatorConfig` (every field is
optional). These environment variables override the credentials after the file is read:

- ``INVOICE_DELIVERY_SIM_SMS_USERNAME``, ``INVOICE_DELIVERY_SIM_SMS_PASSWORD``: HTTP basic
  credentials of the SMS API.
- ``INVOICE_DELIVERY_SIM_SMS_WEBHOOK_SECRET``: secret that signs SMS delivery reports.
- ``INVOICE_DELIVERY_SIM_MAILBOX_CLIENT_ID``, ``INVOICE_DELIVERY_SIM_MAILBOX_CLIENT_SECRET``:
  OAuth2 client credentials of the mailbox API.
- ``INVOICE_DELIVERY_SIM_MAILBOX_TENANT_KEY``: the only tenant key the mailbox API serves.
- ``INVOICE_DELIVERY_SIM_PUSH_BEARER_TOKEN``: the only bearer token the push API accepts.
- ``INVOICE_DELIVERY_SIM_PUSH_WEBHOOK_SECRET``: secret that signs push "opened" receipts.
- ``INVOICE_DELIVERY_SIM_EMAIL_USERNAME``, ``INVOICE_DELIVERY_SIM_EMAIL_PASSWORD``: SMTP AUTH
  credentials, also the HTTP basic credentials of the e-mail lookup route.
- ``INVOICE_DELIVERY_SIM_EMAIL_WEBHOOK_SECRET``: secret that signs e-mail delivery and bounce receipts.
- ``INVOICE_DELIVERY_SIM_EINVOICE_USERNAME``, ``INVOICE_DELIVERY_SIM_EINVOICE_PASSWORD``: HTTP
  basic credentials of the e-invoice access point.
- ``INVOICE_DELIVERY_SIM_EINVOICE_WEBHOOK_SECRET``: secret that signs e-invoice status receipts.
- ``INVOICE_DELIVERY_SIM_PAPER_USERNAME``, ``INVOICE_DELIVERY_SIM_PAPER_PASSWORD``: HTTP basic
  credentials of the print partner API.

Receipt URLs must point at a loopback address, because the simulator is a local test service.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CHANNELS = ("sms", "mailbox", "push", "email", "einvoice", "paper")
DEFAULT_PORT = 8025
DEFAULT_SMTP_PORT = 8026
ENV_PREFIX = "INVOICE_DELIVERY_SIM_"

# Environment variable suffix -> (channel section, field).
ENV_OVERRIDES = {
    "SMS_USERNAME": ("sms", "username"),
    "SMS_PASSWORD": ("sms", "password"),
    "SMS_WEBHOOK_SECRET": ("sms", "webhook_secret"),
    "MAILBOX_CLIENT_ID": ("mailbox", "client_id"),
    "MAILBOX_CLIENT_SECRET": ("mailbox", "client_secret"),
    "MAILBOX_TENANT_KEY": ("mailbox", "tenant_key"),
    "PUSH_BEARER_TOKEN": ("push", "bearer_token"),
    "PUSH_WEBHOOK_SECRET": ("push", "webhook_secret"),
    "EMAIL_USERNAME": ("email", "username"),
    "EMAIL_PASSWORD": ("email", "password"),
    "EMAIL_WEBHOOK_SECRET": ("email", "webhook_secret"),
    "EINVOICE_USERNAME": ("einvoice", "username"),
    "EINVOICE_PASSWORD": ("einvoice", "password"),
    "EINVOICE_WEBHOOK_SECRET": ("einvoice", "webhook_secret"),
    "PAPER_USERNAME": ("paper", "username"),
    "PAPER_PASSWORD": ("paper", "password"),
}


class SimulatorConfigError(ValueError):
    """Raised when the configuration file or an override cannot be used; the message names it."""


def is_loopback_host(host: str) -> bool:
    """Return whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FaultConfig(_Strict):
    """Faults injected into one channel's requests and receipts.

    A request draws one random number against ``rate_429``, ``error_5xx_rate`` and
    ``timeout_rate`` in that order, so their sum must not exceed 1.
    """

    scope: Literal["send", "all"] = Field(
        "send", description="Routes that get HTTP faults: only the send routes, or every channel route."
    )
    latency_ms: int = Field(0, ge=0, description="Delay added to every request in scope, in ms.")
    error_5xx_rate: float = Field(0.0, ge=0, le=1, description="Fraction of requests that get a 5xx response.")
    error_5xx_status: int = Field(503, ge=500, le=599, description="HTTP status of injected server errors.")
    timeout_rate: float = Field(0.0, ge=0, le=1, description="Fraction of requests held until the client times out.")
    timeout_hold_s: float = Field(30.0, ge=0, description="Time a timed-out request is held, in seconds.")
    timeout_after_accept: bool = Field(
        False,
        description="Record the message before holding, as a gateway that accepted it but never replied.",
    )
    rate_429: float = Field(0.0, ge=0, le=1, description="Fraction of requests that get a 429 response.")
    retry_after: int = Field(1, ge=0, description="Retry-After of injected 429 responses, in seconds.")
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    max_request_faults: int | None = Field(
        None,
        ge=0,
        description=(
            "Number of 429, 5xx and timeout faults after which requests pass, counted since the faults "
            "were set or reset; None injects without limit."
        ),
    )
    reject_recipients: list[str] = Field(
        default_factory=list,
        description=(
            "Recipients rejected permanently: SMS 2104, mailbox recipient_not_found, push UNREGISTERED, "
            "e-mail 550 at RCPT, e-invoice receiver_not_registered, paper address_rejected (by postal code)."
        ),
    )
    block_recipients: list[str] = Field(
        default_factory=list,
        description="Recipients rejected permanently like reject_recipients; SMS replies 2105, e-mail 550 5.7.1.",
    )
    receipt_loss_rate: float = Field(0.0, ge=0, le=1, description="Fraction of receipts never sent.")
    receipt_duplicate_rate: float = Field(0.0, ge=0, le=1, description="Fraction of receipts sent twice.")
    receipt_jitter_s: float = Field(
        0.0, ge=0, description="Random extra receipt delay up to this many seconds, which reorders receipts."
    )
    receipt_early_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "Fraction of first receipts of a message POSTed before the reply to its send request, "
            "so they may reach the receiver before the sender has recorded the send."
        ),
    )

    @model_validator(mode="after")
    def _check_rates(self) -> FaultConfig:
        total = self.rate_429 + self.error_5xx_rate + self.timeout_rate
        if total > 1 + 1e-9:  # The tolerance admits sums such as 0.3 + 0.6 + 0.1 despite rounding.
            raise ValueError(f"rate_429 + error_5xx_rate + timeout_rate is {total:g}; the sum must be at most 1")
        return self


class ReceiptConfig(_Strict):
    """Receipt delivery of one channel: receiver URL, delay, retries and timeout."""

    url: str | None = Field(None, description="Loopback URL that receives receipts; None keeps them in the outbox.")
    delay_s: float = Field(1.0, ge=0, description="Time from acceptance to the receipt, in seconds.")
    max_attempts: int = Field(5, ge=1, description="POST attempts per receipt before it is marked failed.")
    retry_backoff_s: float = Field(1.0, ge=0, description="Wait before the second attempt; doubles each attempt.")
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one POST to the receiver, in seconds.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"receipt url {url!r} is not an http(s) URL; use e.g. http://127.0.0.1:8026/receipts")
        return url


class SmsConfig(_Strict):
    """SMS gateway: HTTP basic credentials, delivery reports and their outcomes."""

    username: str = "sms-user"
    password: str = "sms-password"
    webhook_secret: str = "whsec_c2ltdWxhdG9yLXNtcy1kZWxpdmVyeS1yZXBvcnRz"
    receipts: ReceiptConfig = Field(default_factory=ReceiptConfig)
    dlr_failure_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of delivery reports that fail with 1006 or 2104 instead of 1001.",
    )
    operator: str = Field("se.telia", description="Operator named in delivery reports.")


class MailboxConfig(_Strict):
    """Digital mailbox gateway: OAuth2 client, tenant, recipient matching and delivery outcomes."""

    client_id: str = "mailbox-client"
    client_secret: str = "mailbox-secret"
    tenant_key: str = "tenant-simulator"
    token_ttl_s: int = Field(3600, ge=1, description="Lifetime of issued access tokens, in seconds.")
    match_fraction: float = Field(
        0.7, ge=0, le=1, description="Fraction of personal numbers that have a mailbox, by a stable hash."
    )
    match_allow: list[str] = Field(default_factory=list, description="Numbers that always have a mailbox.")
    match_deny: list[str] = Field(default_factory=list, description="Numbers that never have a mailbox.")
    check_ssn_checksum: bool = Field(True, description="Reject personal numbers whose Luhn check digit is wrong.")
    delivery_delay_s: float = Field(1.0, ge=0, description="Time from acceptance to a final status, in seconds.")
    failure_rate: float = Field(0.0, ge=0, le=1, description="Fraction of content that ends 'failed'.")
    paper_rate: float = Field(0.0, ge=0, le=1, description="Fraction of delivered content delivered on paper.")


class PushConfig(_Strict):
    """App push gateway: project, bearer token, dead installation tokens and "opened" receipts."""

    project: str = Field("invoice-app", description="The only project id the push API serves.")
    bearer_token: str = Field("push-bearer-token", description="The only bearer token the push API accepts.")
    webhook_secret: str = "whsec_c2ltdWxhdG9yLXB1c2gtb3BlbmVkLXJlY2VpcHRz"
    receipts: ReceiptConfig = Field(default_factory=ReceiptConfig)
    dead_tokens: list[str] = Field(
        default_factory=list,
        description='Installation tokens that get UNREGISTERED, besides every token starting with "dead-".',
    )
    open_rate: float = Field(
        0.0, ge=0, le=1, description='Fraction of accepted messages that the app reports "opened".'
    )


class EmailConfig(_Strict):
    """E-mail gateway: the SMTP server's port, credentials and TLS, and the bounce outcomes."""

    smtp_port: int = Field(DEFAULT_SMTP_PORT, ge=1, le=65535, description="TCP port of the SMTP server.")
    server_hostname: str = Field("gateway-simulator.localhost", description="Host name in the SMTP greeting.")
    username: str = Field("email-user", description="SMTP AUTH user, also the HTTP basic user of the lookup route.")
    password: str = "email-password"
    auth_required: bool = Field(False, description="Reject mail from sessions that did not authenticate.")
    tls_cert_file: str | None = Field(
        None, description="PEM certificate chain; with tls_key_file the server offers STARTTLS."
    )
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file.")
    webhook_secret: str = "whsec_c2ltdWxhdG9yLWVtYWlsLWRlbGl2ZXJ5LXJlY2VpcHRz"
    receipts: ReceiptConfig = Field(default_factory=ReceiptConfig)
    hard_bounce_rate: float = Field(0.0, ge=0, le=1, description="Fraction of accepted messages that bounce hard.")
    soft_bounce_rate: float = Field(0.0, ge=0, le=1, description="Fraction of accepted messages that bounce soft.")

    @model_validator(mode="after")
    def _check(self) -> EmailConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file to offer STARTTLS, or neither")
        total = self.hard_bounce_rate + self.soft_bounce_rate
        if total > 1 + 1e-9:
            raise ValueError(f"hard_bounce_rate + soft_bounce_rate is {total:g}; the sum must be at most 1")
        return self


class EinvoiceConfig(_Strict):
    """Peppol access point: HTTP basic credentials, registered receivers and message level status."""

    username: str = "einvoice-user"
    password: str = "einvoice-password"
    webhook_secret: str = "whsec_c2ltdWxhdG9yLWVpbnZvaWNlLXN0YXR1cy1yZWNlaXB0cw=="
    receipts: ReceiptConfig = Field(default_factory=ReceiptConfig)
    unknown_receivers: list[str] = Field(
        default_factory=list, description='Participant ids ("scheme:value") not registered in the network.'
    )
    check_participant_checksums: bool = Field(
        True, description="Reject participant ids whose check digit is wrong, as python-stdnum computes it."
    )
    decision_delay_s: float = Field(
        2.0, ge=0, description="Time from acknowledgement (AB) to acceptance (AP) or rejection (RE), in seconds."
    )
    rejection_rate: float = Field(0.0, ge=0, le=1, description="Fraction of documents that end RE.")
    rejection_reasons: list[str] = Field(
        default_factory=lambda: [
            "BR-CO-15: invoice total amount with VAT must equal the total without VAT plus the total VAT amount"
        ],
        min_length=1,
        description="Reasons listed with a simulated RE status.",
    )


class PaperConfig(_Strict):
    """Print partner: HTTP basic credentials and the print, post and return outcomes."""

    username: str = "paper-user"
    password: str = "paper-password"
    print_delay_s: float = Field(1.0, ge=0, description="Time from receipt of a job to 'printed', in seconds.")
    post_delay_s: float = Field(1.0, ge=0, description="Time from 'printed' to 'posted' or 'returned', in seconds.")
    return_rate: float = Field(0.0, ge=0, le=1, description="Fraction of jobs that end 'returned'.")
    returned_postal_codes: list[str] = Field(
        default_factory=list, description="Postal codes whose jobs always end 'returned'; spaces are ignored."
    )


class SimulatorConfig(_Strict):
    """The whole simulator: where it listens, the random seed, each channel and its faults."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    seed: int = Field(0, description="Seed of the random draws for faults and outcomes.")
    sms: SmsConfig = Field(default_factory=SmsConfig)
    mailbox: MailboxConfig = Field(default_factory=MailboxConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    einvoice: EinvoiceConfig = Field(default_factory=EinvoiceConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    faults: dict[str, FaultConfig] = Field(default_factory=dict, description="Faults per channel name.")

    allow_non_loopback: bool = Field(
        False,
        description="Listen and post receipts beyond loopback; only inside an isolated container network.",
    )

    @model_validator(mode="after")
    def _check_loopback(self) -> SimulatorConfig:
        if self.allow_non_loopback:
            return self
        if not is_loopback_host(self.host):
            raise ValueError(f"host {self.host!r} is not a loopback address; use 127.0.0.1, ::1 or localhost")
        for channel in CHANNELS:
            receipts = getattr(getattr(self, channel), "receipts", None)
            url = receipts.url if receipts else None
            if url and not is_loopback_host(urlsplit(url).hostname or ""):
                raise ValueError(
                    f"{channel}.receipts.url {url!r} is not on a loopback address; the simulator posts to "
                    "127.0.0.1, ::1 or localhost unless allow_non_loopback is set (container networks only)"
                )
        return self

    @field_validator("faults")
    @classmethod
    def _check_fault_channels(cls, faults: dict[str, FaultConfig]) -> dict[str, FaultConfig]:
        unknown = sorted(set(faults) - set(CHANNELS))
        if unknown:
            raise ValueError(f"faults name unknown channels {unknown}; valid channels are {list(CHANNELS)}")
        return faults

    @model_validator(mode="after")
    def _check_ports(self) -> SimulatorConfig:
        if self.email.smtp_port == self.port:
            raise ValueError(
                f"email.smtp_port {self.email.smtp_port} equals the HTTP port; give the SMTP server its own port"
            )
        return self

    def faults_for(self, channel: str) -> FaultConfig:
        """Return the channel's configured faults, or no faults."""
        return self.faults.get(channel) or FaultConfig()


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> SimulatorConfig:
    """Read the configuration file (if any), apply environment overrides and validate the result.

    Raises:
        SimulatorConfigError: the file cannot be read or parsed, or a value is invalid.
    """
    raw: dict = {}
    if path is not None:
        raw = _read_json(Path(path))
    _apply_env_overrides(raw, os.environ if env is None else env)
    try:
        return SimulatorConfig.model_validate(raw)
    except ValidationError as exc:
        source = str(path) if path is not None else "the defaults"
        raise SimulatorConfigError(f"invalid simulator configuration in {source}:\n{_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    """List each invalid field with its error, without the input values, which may be secrets."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {location}: {error['msg']}")
    return "\n".join(lines)


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulatorConfigError(f"cannot read simulator configuration {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimulatorConfigError(
            f"simulator configuration {path} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from exc
    if not isinstance(raw, dict):
        raise SimulatorConfigError(f"simulator configuration {path} must contain a JSON object at the top level")
    return raw


def _apply_env_overrides(raw: dict, env: Mapping[str, str]) -> None:
    for suffix, (section, field) in ENV_OVERRIDES.items():
        value = env.get(ENV_PREFIX + suffix)
        if not value:
            continue
        channel_section = raw.setdefault(section, {})
        if not isinstance(channel_section, dict):
            raise SimulatorConfigError(f"configuration section {section!r} must be a JSON object")
        channel_section[field] = value
