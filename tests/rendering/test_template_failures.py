"""A template problem fails the invoice it hits, with a reason, and leaves the rest of the batch alone."""

from __future__ import annotations

import shutil

import pytest

from invoice_delivery.rendering import Renderer, render_batch
from invoice_delivery.rendering.templates import build_environment, templates_dir
from tests.rendering.conftest import DAYTIME, generate_invoices, messages, plan, set_customer


@pytest.fixture
def templates(tmp_path):
    """Return a private copy of the templates folder that a test may change."""
    copy = tmp_path / "templates"
    shutil.copytree(templates_dir(), copy)
    return copy


@pytest.fixture
def three_invoices(conn):
    """Return three payment demands whose customers read Swedish, Finnish and Danish."""
    sv, fi, da = generate_invoices(conn, 20)["payment"][:3]
    for invoice_id, locale in ((sv, "sv"), (fi, "fi"), (da, "da")):
        set_customer(conn, invoice_id, locale=locale)
    return sv, fi, da


def _documents(conn, invoice_ids):
    rows = conn.execute(
        "SELECT invoice_id, status, reason FROM delivery.document WHERE invoice_id = ANY(%s)", (list(invoice_ids),)
    ).fetchall()
    return {row["invoice_id"]: row for row in rows}


def test_missing_variable_fails_only_that_invoice(conn, ctx, templates, three_invoices):
    sv, fi, da = three_invoices
    finnish = templates / "sms" / "invoice.fi.txt.j2"
    finnish.write_text(finnish.read_text(encoding="utf-8") + "Bonuspisteet: {{ loyalty_points }}\n", encoding="utf-8")
    batch_id = plan(conn, ctx, [(sv, "sms"), (fi, "sms"), (da, "sms")])

    result = render_batch(conn, ctx, batch_id, Renderer(build_environment(templates)), now=DAYTIME)

    stored = messages(conn, batch_id)
    assert result == {"rendered": 2, "failed": 1, "deferred": 0}
    assert stored[fi]["state"] == "failed"
    assert "loyalty_points" in stored[fi]["reason"]
    assert "sms/invoice.fi.txt.j2" in stored[fi]["reason"]
    assert stored[fi]["body"] is None
    assert stored[fi]["content_hash"] is None
    assert stored[sv]["state"] == stored[da]["state"] == "rendered"
    assert _documents(conn, [fi])[fi]["status"] == "failed"


def test_missing_template_fails_without_fallback(conn, ctx, templates, three_invoices):
    sv, fi, da = three_invoices
    (templates / "push" / "title.da.txt.j2").unlink()
    batch_id = plan(conn, ctx, [(sv, "push"), (fi, "push"), (da, "push")])

    result = render_batch(conn, ctx, batch_id, Renderer(build_environment(templates)), now=DAYTIME)

    stored = messages(conn, batch_id)
    assert result["failed"] == 1
    assert stored[da]["state"] == "failed"
    assert "push/title.da.txt.j2 does not exist" in stored[da]["reason"]
    assert stored[da]["body"] is None
    assert stored[sv]["state"] == stored[fi]["state"] == "rendered"


def test_unsupported_locale_fails_with_reason(conn, ctx, three_invoices):
    sv, fi, _ = three_invoices
    set_customer(conn, fi, locale="de")
    batch_id = plan(conn, ctx, [(sv, "email"), (fi, "email")])
    conn.execute("UPDATE billing.customer SET email = 'kund@example.com'")

    render_batch(conn, ctx, batch_id, now=DAYTIME)

    stored = messages(conn, batch_id)
    assert stored[fi]["state"] == "failed"
    assert "locale 'de' has no templates" in stored[fi]["reason"]
    assert stored[sv]["state"] == "rendered"


def test_failure_reason_holds_no_personal_data(conn, ctx, three_invoices):
    sv, _, _ = three_invoices
    set_customer(conn, sv, email="not an address")
    batch_id = plan(conn, ctx, [(sv, "email")])

    render_batch(conn, ctx, batch_id, now=DAYTIME)

    reason = messages(conn, batch_id)[sv]["reason"]
    assert "recipient e-mail address" in reason
    assert "not an address" not in reason
