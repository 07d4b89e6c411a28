"""Clients for the channel gateways, one module per channel, built on Airflow connections."""

import os
from datetime import timedelta

from invoice_delivery.channels.base import (
    GatewayConfig,
    GatewayError,
    RejectedError,
    SendOutcome,
    TransientGatewayError,
)

ALL_CHANNELS: tuple[str, ...] = ("mailbox", "sms", "push", "email", "einvoice", "paper")
# Channels a deployment sends on when INVOICE_DELIVERY_CHANNELS does not say otherwise.
DEFAULT_CHANNELS: tuple[str, ...] = ALL_CHANNELS


def enabled_channels() -> tuple[str, ...]:
    """Return the channels this deployment sends on: ``INVOICE_DELIVERY_CHANNELS`` (comma-separated).

    A biller without a contract for a gateway leaves its channel out; routing then records
    "channel not enabled in this deployment" for it.
    """
    raw = os.environ.get("INVOICE_DELIVERY_CHANNELS")
    if raw is None:
        return DEFAULT_CHANNELS
    channels = tuple(name.strip() for name in raw.split(",") if name.strip())
    unknown = [name for name in channels if name not in ALL_CHANNELS]
    if unknown or not channels:
        raise ValueError(
            f"INVOICE_DELIVERY_CHANNELS={raw!r} names unknown channels {unknown}; use a comma-separated "
            f"subset of {', '.join(ALL_CHANNELS)}"
        )
    return channels
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
    "ALL_CHANNELS",
    "enabled_channels",
    "RECEIPT_DEADLINES",
    "GatewayConfig",
    "GatewayError",
    "RejectedError",
    "SendOutcome",
    "TransientGatewayError",
]
