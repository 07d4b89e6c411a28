"""Keep the simulator's accepted messages and per-channel counters in memory.

The simulator runs as one uvicorn worker on one event loop, and nothing here awaits, so the
store needs no locks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class MessageRecord:
    """One message a gateway accepted, with the status the channel module keeps up to date."""

    channel: str
    message_id: str
    idempotency_key: str | None
    recipient: str
    received_at: float
    body: dict[str, Any]
    payload_hash: str | None = None
    status: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as the ``/_sim/messages`` route lists it."""
        return {
            "channel": self.channel,
            "message_id": self.message_id,
            "idempotency_key": self.idempotency_key,
            "recipient": self.recipient,
            "received_at": self.received_at,
            "status": dict(self.status),
            "body": self.body,
        }


@dataclass
class ChannelStats:
    """Counters of one channel since start or the last reset."""

    requests: int = 0
    messages_accepted: int = 0
    duplicates_offered: int = 0
    rejected: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)
    accepted_per_second: Counter[int] = field(default_factory=Counter)
    receipts: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        """Return the counters with string keys, as JSON needs."""
        return {
            "requests": self.requests,
            "messages_accepted": self.messages_accepted,
            "duplicates_offered": self.duplicates_offered,
            "rejected": self.rejected,
            "faults_injected": dict(self.faults_injected),
            "accepted_per_second": {str(second): count for second, count in sorted(self.accepted_per_second.items())},
            "receipts": dict(self.receipts),
        }


class ChannelStore:
    """Messages of one channel, indexed by message id, idempotency key and payload hash."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = ChannelStats()
        self.by_id: dict[str, MessageRecord] = {}
        self.by_key: dict[str, MessageRecord] = {}
        self.by_payload: dict[str, MessageRecord] = {}

    def find(self, idempotency_key: str | None = None, payload_hash: str | None = None) -> MessageRecord | None:
        """Return the accepted message with this idempotency key, else with this payload hash."""
        if idempotency_key is not None:
            record = self.by_key.get(idempotency_key)
            if record is not None:
                return record
        if payload_hash is not None:
            return self.by_payload.get(payload_hash)
        return None

    def accept(self, record: MessageRecord) -> None:
        """Store a newly accepted message and count it in its Unix second."""
        self.by_id[record.message_id] = record
        if record.idempotency_key is not None:
            self.by_key[record.idempotency_key] = record
        if record.payload_hash is not None:
            self.by_payload[record.payload_hash] = record
        self.stats.messages_accepted += 1
        self.stats.accepted_per_second[int(record.received_at)] += 1

    def messages(self) -> list[MessageRecord]:
        """Return the accepted messages in acceptance order."""
        return list(self.by_id.values())


class SimulatorState:
    """All channels' stores."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channel_names = channels
        self.channels: dict[str, ChannelStore] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every message and counter."""
        self.channels = {name: ChannelStore(name) for name in self.channel_names}

    def channel(self, name: str) -> ChannelStore:
        """Return one channel's store.

        Raises:
            KeyError: the channel does not exist; the message lists the valid names.
        """
        try:
            return self.channels[name]
        except KeyError:
            raise KeyError(f"unknown channel {name!r}; valid channels are {list(self.channel_names)}") from None

    def stats(self) -> dict[str, Any]:
        """Return every channel's counters."""
        return {name: store.stats.to_json() for name, store in self.channels.items()}
