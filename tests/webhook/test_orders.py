"""A paid Checkout session becomes exactly one order and one message."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from songswipe.shared.db import Connection
from songswipe.shared.messages import GenerationRequested
from songswipe.shared.topics import Topics
from tests.support import consume, insert_customization
from tests.webhook.helpers import (
    checkout_session,
    deliver,
    stripe_event,
    topic_size,
)


async def count(db: Connection, table: str) -> int:
    cursor = await db.execute(f"select count(*) as n from {table}")
    row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def test_paid_session_records_one_order_and_publishes_it(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization)
    event = stripe_event(session)

    response = await deliver(client, event)

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "order_recorded"
    cursor = await db.execute("select * from orders")
    orders = await cursor.fetchall()
    assert len(orders) == 1
    order = orders[0]
    assert order["status"] == "paid"
    assert order["stripe_session_id"] == session["id"]
    assert order["stripe_payment_intent_id"] == session["payment_intent"]
    assert order["amount_total"] == 1999
    assert order["currency"] == "usd"
    assert order["user_id"] == customization["user_id"]
    assert order["customization_id"] == customization["id"]
    assert order["published_at"] is not None
    assert response.json()["order_id"] == str(order["id"])

    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert len(messages) == 1
    message = messages[0]
    assert message.order_id == order["id"]
    assert message.user_id == customization["user_id"]
    assert message.customization_id == customization["id"]
    assert message.stripe_session_id == session["id"]

    cursor = await db.execute("select * from stripe_events")
    events = await cursor.fetchall()
    assert [(e["event_id"], e["outcome"], e["order_id"]) for e in events] == [
        (event["id"], "order_recorded", order["id"])
    ]


async def test_async_payment_succeeded_records_the_order(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization)
    waiting = stripe_event(
        checkout_session(
            customization, session_id=session["id"], payment_status="unpaid"
        )
    )
    succeeded = stripe_event(
        session, event_type="checkout.session.async_payment_succeeded"
    )

    first = await deliver(client, waiting)
    assert first.status_code == 200
    assert first.json()["outcome"] == "awaiting_payment"
    assert await count(db, "orders") == 0

    second = await deliver(client, succeeded)
    assert second.status_code == 200
    assert second.json()["outcome"] == "order_recorded"
    assert await count(db, "orders") == 1
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert len(messages) == 1


async def test_repeated_event_is_answered_at_once(
    client: httpx.AsyncClient, db: Connection
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))

    first = await deliver(client, event)
    again = await deliver(client, event)

    assert first.json()["outcome"] == "order_recorded"
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    assert await count(db, "orders") == 1
    assert await count(db, "stripe_events") == 1


async def test_same_event_fifty_times_concurrently_gives_one_order_one_message(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))

    responses = await asyncio.gather(*(deliver(client, event) for _ in range(50)))

    assert [r.status_code for r in responses] == [200] * 50
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes.count("order_recorded") == 1
    assert await count(db, "orders") == 1
    assert await count(db, "stripe_events") == 1
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert len(messages) == 1


async def test_same_session_under_fifty_event_ids_gives_one_order_one_message(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization)
    events = [stripe_event(session) for _ in range(50)]

    responses = await asyncio.gather(*(deliver(client, e) for e in events))

    assert [r.status_code for r in responses] == [200] * 50
    order_ids = {r.json()["order_id"] for r in responses}
    assert len(order_ids) == 1
    assert await count(db, "orders") == 1
    assert await count(db, "stripe_events") == 50
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert len(messages) == 1
    assert str(messages[0].order_id) in order_ids


async def test_payment_failures_are_recorded_and_start_nothing(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization, payment_status="unpaid")
    async_failed = stripe_event(
        session, event_type="checkout.session.async_payment_failed"
    )
    intent_failed = stripe_event(
        {
            "id": f"pi_{uuid.uuid4().hex[:24]}",
            "object": "payment_intent",
            "metadata": {},
        },
        event_type="payment_intent.payment_failed",
    )

    for event in (async_failed, intent_failed):
        response = await deliver(client, event)
        assert response.status_code == 200
        assert response.json()["outcome"] == "payment_failed"

    cursor = await db.execute(
        "select event_id, stripe_session_id, outcome from stripe_events"
        " order by received_at"
    )
    assert await cursor.fetchall() == [
        {
            "event_id": async_failed["id"],
            "stripe_session_id": session["id"],
            "outcome": "payment_failed",
        },
        {
            "event_id": intent_failed["id"],
            "stripe_session_id": None,
            "outcome": "payment_failed",
        },
    ]
    assert await count(db, "orders") == 0
    assert await topic_size(kafka_bootstrap, topics.requested) == 0
