"""Reading orders out of Stripe events (pure, no infrastructure)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from songswipe.webhook.errors import Unprocessable
from songswipe.webhook.events import (
    Kind,
    StripeEvent,
    dead_letter_id,
    paid_checkout,
    storable_event,
)


def event(data_object: dict[str, Any], event_type: str) -> StripeEvent:
    return StripeEvent.model_validate(
        {
            "id": "evt_1",
            "object": "event",
            "type": event_type,
            "data": {"object": data_object},
        }
    )


def session(**fields: Any) -> dict[str, Any]:
    return {
        "id": "cs_test_1",
        "payment_status": "paid",
        "metadata": {"userId": str(uuid.uuid4()), "customizationId": str(uuid.uuid4())},
        **fields,
    }


@pytest.mark.parametrize(
    ("event_type", "payment_status", "kind"),
    [
        ("checkout.session.completed", "paid", Kind.PAID),
        ("checkout.session.completed", "no_payment_required", Kind.PAID),
        ("checkout.session.completed", "unpaid", Kind.UNPAID),
        ("checkout.session.completed", None, Kind.UNPAID),
        ("checkout.session.async_payment_succeeded", "paid", Kind.PAID),
        ("checkout.session.async_payment_failed", "unpaid", Kind.PAYMENT_FAILED),
        ("payment_intent.payment_failed", None, Kind.PAYMENT_FAILED),
        ("checkout.session.expired", "unpaid", Kind.OTHER),
        ("customer.created", None, Kind.OTHER),
    ],
)
def test_kind(event_type: str, payment_status: str | None, kind: Kind) -> None:
    assert event(session(payment_status=payment_status), event_type).kind is kind


def test_paid_checkout_reads_an_expanded_intent_and_normalises_the_currency() -> None:
    data = session(
        payment_intent={"id": "pi_123", "object": "payment_intent"},
        amount_total=2500,
        currency="EUR",
    )

    checkout = paid_checkout(event(data, "checkout.session.completed"))

    assert checkout.payment_intent_id == "pi_123"
    assert checkout.currency == "eur"
    assert checkout.amount_total == 2500
    assert str(checkout.user_id) == data["metadata"]["userId"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"currency": "euro"}, "currency"),
        ({"amount_total": -1}, "amount_total"),
        ({"id": "cs test"}, "id"),
        ({"metadata": None}, "no metadata.userId"),
        ({"metadata": {"userId": str(uuid.uuid4())}}, "no metadata.customizationId"),
        (
            {"metadata": {"userId": "1", "customizationId": str(uuid.uuid4())}},
            "not a UUID",
        ),
    ],
)
def test_unusable_sessions_say_what_to_fix(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(Unprocessable, match=says):
        paid_checkout(event(session(**fields), "checkout.session.completed"))


def test_dead_letter_id_is_stable_per_event() -> None:
    assert dead_letter_id("evt_1") == dead_letter_id("evt_1")
    assert dead_letter_id("evt_1") != dead_letter_id("evt_2")


def test_storable_event_drops_what_jsonb_refuses() -> None:
    assert storable_event(b'{"a": "x\\u0000y"}') == {"a": "x\ufffdy"}
    assert "unstorable" in storable_event(b'{"a": NaN}')
    assert "unstorable" in storable_event(b"[1]")
