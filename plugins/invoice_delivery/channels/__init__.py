"""Clients for the channel gateways, one module per channel, built on Airflow connections."""

from datetime import timedelta

from invoice_delivery.channels.base import (
    GatewayConfig,
    GatewayError,
    RejectedError,
    SendOutcome,
    TransientGatewayError,
)

# Channels this deployment can send on; routing leaves the others out with a reason.
ENABLED_CHANNELS: tuple[str, ...] = ("mailbox", "sms")
CONN_IDS = {channel: f"{channel}_gateway" for channel in ("sms", "mailbox", "push", "email", "einvoice", "paper")}
# How long after acceptance a final receipt may take before the delivery expires.
RECEIPT_DEADLINES = {
    "sms": timedelta(hours=48),  # the default SMS validity period
    "mailbox": timedelta(days=3),
    "push": timedelta(hours=24),
    "email": timedelta(days=3),
    "einvoice": timedelta(days=5),
    "paper": timedelta(days=10),
}

__all__ = [
    "CONN_IDS",
    "ENABLED_CHANNELS",
    "RECEIPT_DEADLINES",
    "GatewayConfig",
    "GatewayError",
    "RejectedError",
    "SendOutcome",
    "TransientGatewayError",
]
