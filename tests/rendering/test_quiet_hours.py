"""Quiet hours in the recipient's time zone, across both 2026 daylight-saving changes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from invoice_delivery.quiet_hours import QUIET_HOURS_VARIABLE, configured_window, is_quiet, next_allowed_time
from invoice_delivery.rendering import render_batch
from tests.rendering.conftest import generate_invoices, messages, plan, set_customer

STOCKHOLM, HELSINKI = "Europe/Stockholm", "Europe/Helsinki"


@pytest.fixture(autouse=True)
def default_window(monkeypatch):
    """Use the default 21:00 to 08:00 window whatever the environment of the test run sets."""
    monkeypatch.delenv(QUIET_HOURS_VARIABLE, raising=False)


def utc(*fields) -> datetime:
    return datetime(*fields, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # Spring: on 29 March 2026 clocks go from 02:00 CET to 03:00 CEST (01:00 UTC).
        (STOCKHOLM, utc(2026, 3, 28, 20, 30), utc(2026, 3, 29, 6, 0)),  # 21:30 CET, the evening before
        (STOCKHOLM, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 6, 0)),  # 01:30 CET, before the change
        (STOCKHOLM, utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 6, 0)),  # 03:30 CEST, after it
        (STOCKHOLM, utc(2026, 3, 29, 5, 59), utc(2026, 3, 29, 6, 0)),  # 07:59 CEST
        (STOCKHOLM, utc(2026, 3, 29, 6, 0), utc(2026, 3, 29, 6, 0)),  # 08:00 CEST: allowed
        (STOCKHOLM, utc(2026, 3, 29, 18, 59), utc(2026, 3, 29, 18, 59)),  # 20:59 CEST: allowed
        (STOCKHOLM, utc(2026, 3, 29, 19, 0), utc(2026, 3, 30, 6, 0)),  # 21:00 CEST
        # Autumn: on 25 October 2026 clocks go from 03:00 CEST back to 02:00 CET (01:00 UTC).
        (STOCKHOLM, utc(2026, 10, 24, 20, 0), utc(2026, 10, 25, 7, 0)),  # 22:00 CEST
        (STOCKHOLM, utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 7, 0)),  # 02:30 CEST, first time
        (STOCKHOLM, utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 7, 0)),  # 02:30 CET, second time
        (STOCKHOLM, utc(2026, 10, 25, 6, 30), utc(2026, 10, 25, 7, 0)),  # 07:30 CET
        (STOCKHOLM, utc(2026, 10, 25, 7, 0), utc(2026, 10, 25, 7, 0)),  # 08:00 CET: allowed
        (STOCKHOLM, utc(2026, 10, 25, 19, 59), utc(2026, 10, 25, 19, 59)),  # 20:59 CET: allowed
        (STOCKHOLM, utc(2026, 10, 25, 20, 0), utc(2026, 10, 26, 7, 0)),  # 21:00 CET
        # Helsinki changes at the same instants, one hour further east.
        (HELSINKI, utc(2026, 3, 28, 19, 30), utc(2026, 3, 29, 5, 0)),  # 21:30 EET
        (HELSINKI, utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 5, 0)),  # 04:30 EEST
        (HELSINKI, utc(2026, 3, 29, 5, 0), utc(2026, 3, 29, 5, 0)),  # 08:00 EEST: allowed
        (HELSINKI, utc(2026, 10, 24, 19, 0), utc(2026, 10, 25, 6, 0)),  # 22:00 EEST
        (HELSINKI, utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 6, 0)),  # 03:30 EET, second time
        (HELSINKI, utc(2026, 10, 25, 6, 0), utc(2026, 10, 25, 6, 0)),  # 08:00 EET: allowed
    ],
)
def test_next_allowed_time_across_dst(zone, now, expected):
    allowed = next_allowed_time(now, zone)

    assert allowed == expected
    assert allowed.utcoffset().total_seconds() == 0
    if allowed != now:
        assert allowed.astimezone(ZoneInfo(zone)).time() == time(8, 0)


def test_window_within_one_day():
    lunch_start, lunch_end = time(12, 0), time(13, 0)

    assert next_allowed_time(utc(2026, 6, 1, 10, 30), STOCKHOLM, lunch_start, lunch_end) == utc(2026, 6, 1, 11, 0)
    assert next_allowed_time(utc(2026, 6, 1, 9, 59), STOCKHOLM, lunch_start, lunch_end) == utc(2026, 6, 1, 9, 59)


def test_equal_start_and_end_means_no_quiet_hours():
    assert not is_quiet(time(3, 0), time(8, 0), time(8, 0))
    assert next_allowed_time(utc(2026, 6, 1, 1, 0), STOCKHOLM, time(8), time(8)) == utc(2026, 6, 1, 1, 0)


@pytest.mark.parametrize("name", ["Europe/Stokholm", "", "../etc/passwd", "CET+1"])
def test_invalid_time_zone_names_the_zone(name):
    with pytest.raises(ValueError, match=re.escape(f"time zone {name!r} is not a valid IANA time zone name")):
        next_allowed_time(utc(2026, 6, 1, 1, 0), name)


def test_naive_now_rejected():
    with pytest.raises(ValueError, match="has no time zone"):
        next_allowed_time(datetime(2026, 6, 1, 1, 0), STOCKHOLM)


def test_render_batch_defers_sms_and_push_only(conn, ctx):
    ids = generate_invoices(conn, 20)["payment"][:5]
    stockholm_sms, stockholm_push, helsinki_sms, email, paper = ids
    for invoice_id in ids:
        set_customer(conn, invoice_id, time_zone=STOCKHOLM, locale="sv", email="kund@example.com")
    set_customer(conn, helsinki_sms, time_zone=HELSINKI, locale="fi")
    batch_id = plan(conn, ctx, [(stockholm_sms, "sms"), (stockholm_push, "push"), (helsinki_sms, "sms"),
                                (email, "email"), (paper, "paper")])
    evening = utc(2026, 10, 24, 20, 0)  # 22:00 in Stockholm, 23:00 in Helsinki

    result = render_batch(conn, ctx, batch_id, now=evening)

    stored = messages(conn, batch_id)
    assert result == {"rendered": 5, "failed": 0, "deferred": 3}
    assert stored[stockholm_sms]["not_before"] == utc(2026, 10, 25, 7, 0)
    assert stored[stockholm_push]["not_before"] == utc(2026, 10, 25, 7, 0)
    assert stored[helsinki_sms]["not_before"] == utc(2026, 10, 25, 6, 0)
    assert stored[email]["not_before"] is None
    assert stored[paper]["not_before"] is None
    assert all(row["state"] == "rendered" for row in stored.values())


def test_render_batch_sends_daytime_sms_at_once(conn, ctx):
    invoice_id = generate_invoices(conn, 5)["payment"][0]
    set_customer(conn, invoice_id, time_zone=STOCKHOLM)
    batch_id = plan(conn, ctx, [(invoice_id, "sms")])

    result = render_batch(conn, ctx, batch_id, now=utc(2026, 10, 25, 7, 0))

    assert result["deferred"] == 0
    assert messages(conn, batch_id)[invoice_id]["not_before"] is None


def test_invalid_customer_time_zone_fails_sms(conn, ctx):
    invoice_id = generate_invoices(conn, 5)["payment"][0]
    set_customer(conn, invoice_id, time_zone="Mars/Olympus_Mons")
    batch_id = plan(conn, ctx, [(invoice_id, "sms")])

    render_batch(conn, ctx, batch_id, now=utc(2026, 10, 25, 7, 0))

    row = messages(conn, batch_id)[invoice_id]
    assert row["state"] == "failed"
    assert "time zone 'Mars/Olympus_Mons' is not a valid IANA time zone name" in row["reason"]


@pytest.mark.parametrize(
    ("value", "window"),
    [("", (time(21), time(8))), ("22:00-07:30", (time(22), time(7, 30))), (" 20:00 - 06:00 ", (time(20), time(6))),
     ("off", None), ("OFF", None)],
)
def test_window_from_environment(value, window):
    assert configured_window({QUIET_HOURS_VARIABLE: value}) == window


@pytest.mark.parametrize("value", ["21-8", "21:00", "evening", "25:00-08:00"])
def test_invalid_window_names_variable(value):
    with pytest.raises(ValueError, match=re.escape(f"{QUIET_HOURS_VARIABLE}={value!r} is not a quiet-hours window")):
        configured_window({QUIET_HOURS_VARIABLE: value})


def test_render_batch_without_quiet_hours(conn, ctx, monkeypatch):
    monkeypatch.setenv(QUIET_HOURS_VARIABLE, "off")
    invoice_id = generate_invoices(conn, 5)["payment"][0]
    set_customer(conn, invoice_id, time_zone=STOCKHOLM)
    batch_id = plan(conn, ctx, [(invoice_id, "sms")])

    result = render_batch(conn, ctx, batch_id, now=utc(2026, 10, 24, 22, 0))

    assert result["deferred"] == 0
    assert messages(conn, batch_id)[invoice_id]["not_before"] is None
