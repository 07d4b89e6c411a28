from decimal import Decimal

import pytest

from invoice_delivery.routing import plan_for, purpose_of

ALL = ("einvoice", "mailbox", "push", "email", "sms", "paper")


def customer(**overrides):
    row = {
        "kind": "person", "personal_number": "198001011234", "peppol_id": None, "mobile": "+46701740605",
        "email": "a@example.com", "push_token": None, "street": "Storgatan 1", "postal_code": "111 22",
        "city": "Stockholm", "customer_country": "SE", "channel_preferences": ["sms", "mailbox"],
        "consents": ["sms", "mailbox", "email"], "has_mailbox": True, "document_type": "invoice",
        "payable": Decimal("100.00"),
    }
    row.update(overrides)
    return row


def channels(plan):
    return [step["channel"] for step in plan]


def test_preference_order_then_cheapest_then_paper():
    plan, _ = plan_for(customer(), ALL)

    assert channels(plan) == ["sms", "mailbox", "email", "paper"]
    assert plan[0]["reason"] == "customer preference #1"


def test_no_consent_skipped_with_reason():
    plan, skipped = plan_for(customer(consents=["mailbox"]), ALL)

    assert "sms" not in channels(plan)
    assert {"channel": "sms", "reason": "no consent"} in skipped


def test_unreachable_first_choice_falls_to_next():
    plan, skipped = plan_for(customer(mobile=None), ALL)

    assert channels(plan)[0] == "mailbox"
    assert {"channel": "sms", "reason": "no mobile number"} in skipped


def test_business_with_peppol_gets_einvoice_first():
    plan, _ = plan_for(customer(kind="business", personal_number=None, peppol_id="0007:5560000001"), ALL)

    assert channels(plan)[0] == "einvoice"


def test_disabled_channel_left_out():
    plan, skipped = plan_for(customer(), ("sms",))

    assert channels(plan) == ["sms"]
    assert {"channel": "paper", "reason": "channel not enabled in this deployment"} in skipped


def test_nothing_usable_gives_empty_plan():
    plan, skipped = plan_for(customer(consents=[], street=None), ALL)

    assert plan == []
    assert len(skipped) == len(ALL)


@pytest.mark.parametrize(
    ("document_type", "payable", "purpose"),
    [("invoice", Decimal("1.00"), "payment_demand"), ("invoice", Decimal("0.00"), "informational"),
     ("invoice", Decimal("-5.00"), "informational"), ("credit_note", Decimal("50.00"), "informational")],
)
def test_purpose(document_type, payable, purpose):
    assert purpose_of({"document_type": document_type, "payable": payable}) == purpose
