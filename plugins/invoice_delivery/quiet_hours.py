"""Keep SMS and push messages out of the recipient's night, in the recipient's own time zone.

Quiet hours are a local wall-clock window, by default 21:00 to 08:00, which the environment
variable ``INVOICE_DELIVERY_QUIET_HOURS`` changes (``22:00-07:30``) or turns off (``off``). A
message rendered inside the window waits until the window ends, computed in the recipient's IANA
time zone with ``zoneinfo``, so it goes out at 08:00 local time across daylight-saving changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

QUIET_START = time(21, 0)
QUIET_END = time(8, 0)
QUIET_HOURS_VARIABLE = "INVOICE_DELIVERY_QUIET_HOURS"


def configured_window(environ: Mapping[str, str] = os.environ) -> tuple[time, time] | None:
    """Return the quiet-hours window (start, end) set in the environment; None when turned off.

    Raises:
        ValueError: the variable is neither ``off`` nor a window such as ``21:00-08:00``.
    """
    raw = environ.get(QUIET_HOURS_VARIABLE, "").strip()
    if not raw:
        return QUIET_START, QUIET_END
    if raw.lower() == "off":
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in raw.split("-"))
    except ValueError:
        raise ValueError(
            f"{QUIET_HOURS_VARIABLE}={raw!r} is not a quiet-hours window; set HH:MM-HH:MM (such as 21:00-08:00) or off"
        ) from None
    return start, end


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``; raise ValueError naming it when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(
            f"time zone {name!r} is not a valid IANA time zone name; use a name such as 'Europe/Stockholm'"
        ) from exc


def is_quiet(local: time, quiet_start: time = QUIET_START, quiet_end: time = QUIET_END) -> bool:
    """Return whether a local wall-clock time falls in [quiet_start, quiet_end).

    A window whose start is after its end spans midnight. Equal start and end mean no quiet hours.
    """
    if quiet_start == quiet_end:
        return False
    if quiet_start < quiet_end:
        return quiet_start <= local < quiet_end
    return local >= quiet_start or local < quiet_end


def next_allowed_time(
    now_utc: datetime,
    time_zone: str,
    quiet_start: time = QUIET_START,
    quiet_end: time = QUIET_END,
) -> datetime:
    """Return ``now_utc`` if it is outside the recipient's quiet hours, else when they end, in UTC.

    Raises:
        ValueError: ``now_utc`` has no time zone, or ``time_zone`` is not an IANA time zone name.
    """
    if now_utc.tzinfo is None:
        raise ValueError(f"now_utc {now_utc.isoformat()} has no time zone; pass an aware datetime in UTC")
    recipient_zone = zone(time_zone)
    local = now_utc.astimezone(recipient_zone)
    if not is_quiet(local.time(), quiet_start, quiet_end):
        return now_utc
    end_day = local.date()
    if quiet_start > quiet_end and local.time() >= quiet_start:
        end_day += timedelta(days=1)  # evening part of a window that spans midnight: it ends tomorrow
    return _local_to_utc(end_day, quiet_end, recipient_zone)


def _local_to_utc(day: date, wall_time: time, recipient_zone: ZoneInfo) -> datetime:
    """Convert a local wall-clock time to UTC.

    A time repeated when clocks go back takes its first occurrence. A time skipped when clocks go
    forward is read with the offset before the change: 02:30 on a night that jumps from 02:00 to
    03:00 becomes 03:30.
    """
    return datetime.combine(day, wall_time, tzinfo=recipient_zone).astimezone(UTC)
