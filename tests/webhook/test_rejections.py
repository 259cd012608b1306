"""Deliveries that are refused or cannot become orders write nothing but a DLQ row."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from songswipe.shared.db import Connection
from songswipe.shared.topics import Topics
from songswipe.webhook.events import dead_letter_id
from tests.support import insert_customization
from tests.webhook.helpers import (
    SECRET,
    WEBHOOK_PATH,
    checkout_session,
    deliver,
    signed_headers,
    stripe_event,
    topic_size,
)

MIB = 1024 * 1024


async def table_counts(db: Connection) -> dict[str, int]:
    cursor = await db.execute(
        "select (select count(*) from orders) as orders,"
        " (select count(*) from stripe_events) as stripe_events,"
        " (select count(*) from failed_jobs) as failed_jobs"
    )
    row = await cursor.fetchone()
    assert row is not None
    return {key: int(value) for key, value in row.items()}


NOTHING = {"orders": 0, "stripe_events": 0, "failed_jobs": 0}


async def test_wrong_signature_is_refused(
    client: httpx.AsyncClient, db: Connection
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))

    response = await deliver(client, event, secret="whsec_someone_else")

    assert response.status_code == 400
    assert response.json() == {"error": "invalid signature"}
    assert await table_counts(db) == NOTHING


async def test_missing_signature_is_refused(
    client: httpx.AsyncClient, db: Connection
) -> None:
    customization = await insert_customization(db)
    body = json.dumps(stripe_event(checkout_session(customization))).encode()

    response = await client.post(WEBHOOK_PATH, content=body)

    assert response.status_code == 400
    assert response.json() == {"error": "missing Stripe-Signature header"}
    assert await table_counts(db) == NOTHING


async def test_tampered_body_is_refused(
    client: httpx.AsyncClient, db: Connection
) -> None:
    customization = await insert_customization(db)
    body = json.dumps(stripe_event(checkout_session(customization))).encode()
    headers = signed_headers(body)

    tampered = body.replace(b"1999", b"0001")
    response = await client.post(WEBHOOK_PATH, content=tampered, headers=headers)

    assert response.status_code == 400
    assert await table_counts(db) == NOTHING


async def test_stale_timestamp_is_refused(
    client: httpx.AsyncClient, db: Connection
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))

    response = await deliver(client, event, timestamp=int(time.time()) - 301)

    assert response.status_code == 400
    assert response.json() == {"error": "timestamp outside the tolerance"}
    assert await table_counts(db) == NOTHING


async def test_signed_body_that_is_not_json_is_refused(
    client: httpx.AsyncClient, db: Connection
) -> None:
    body = b'{"id": "evt_1", "object": "event", "type": '

    response = await client.post(
        WEBHOOK_PATH, content=body, headers=signed_headers(body)
    )

    assert response.status_code == 400
    assert response.json() == {"error": "body is not valid JSON"}
    assert await table_counts(db) == NOTHING


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2, 3]",
        b'{"id": "evt_1", "type": "checkout.session.completed"}',
        b'{"id": "evt_1", "object": "charge", "type": "x", "data": {"object": {}}}',
        b'{"id": "evt 1", "object": "event", "type": "x", "data": {"object": {}}}',
    ],
)
async def test_signed_json_that_is_not_a_stripe_event_is_refused(
    client: httpx.AsyncClient, db: Connection, body: bytes
) -> None:
    response = await client.post(
        WEBHOOK_PATH, content=body, headers=signed_headers(body)
    )

    assert response.status_code == 400
    assert response.json() == {"error": "body is not a Stripe event"}
    assert await table_counts(db) == NOTHING


async def test_oversized_body_is_refused_before_the_signature(
    client: httpx.AsyncClient, db: Connection
) -> None:
    body = b"{" + b" " * MIB + b"}"

    response = await client.post(
        WEBHOOK_PATH, content=body, headers={"Stripe-Signature": "t=1,v1=00"}
    )

    assert response.status_code == 413
    assert await table_counts(db) == NOTHING


async def test_oversized_chunked_body_is_refused_while_reading(
    client: httpx.AsyncClient, db: Connection
) -> None:
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(64):
            chunks_sent += 1
            yield b" " * (64 * 1024)

    response = await client.post(WEBHOOK_PATH, content=chunks())

    assert response.status_code == 413
    assert "content-length" not in response.request.headers
    assert await table_counts(db) == NOTHING


async def test_body_at_the_limit_is_read(
    client: httpx.AsyncClient, db: Connection
) -> None:
    event = stripe_event({"id": "in_1", "object": "invoice"}, event_type="invoice.paid")
    body = json.dumps(event).encode()
    body = body[:-1] + b" " * (MIB - len(body)) + b"}"
    assert len(body) == MIB

    response = await client.post(
        WEBHOOK_PATH, content=body, headers=signed_headers(body)
    )

    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"


async def test_unknown_event_type_is_ignored(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(
        checkout_session(customization), event_type="checkout.session.expired"
    )

    response = await deliver(client, event)

    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert await table_counts(db) == NOTHING
    assert await topic_size(kafka_bootstrap, topics.requested) == 0


def unprocessable_cases() -> list[Any]:
    def missing_user(c: dict[str, Any]) -> dict[str, Any]:
        return {"customizationId": str(c["id"])}

    def missing_customization(c: dict[str, Any]) -> dict[str, Any]:
        return {"userId": str(c["user_id"])}

    def malformed_user(c: dict[str, Any]) -> dict[str, Any]:
        return {"userId": "maya", "customizationId": str(c["id"])}

    def unknown_customization(c: dict[str, Any]) -> dict[str, Any]:
        return {"userId": str(c["user_id"]), "customizationId": str(uuid.uuid4())}

    def other_users_customization(c: dict[str, Any]) -> dict[str, Any]:
        return {"userId": str(uuid.uuid4()), "customizationId": str(c["id"])}

    return [
        pytest.param(missing_user, "no metadata.userId", id="missing-userId"),
        pytest.param(
            missing_customization,
            "no metadata.customizationId",
            id="missing-customizationId",
        ),
        pytest.param(malformed_user, "metadata.userId", id="malformed-userId"),
        pytest.param(unknown_customization, "does not exist", id="unknown"),
        pytest.param(other_users_customization, "another user", id="other-user"),
    ]


@pytest.mark.parametrize(("metadata", "says"), unprocessable_cases())
async def test_unprocessable_event_is_dead_lettered_once(
    client: httpx.AsyncClient,
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
    metadata: Any,
    says: str,
) -> None:
    caplog.set_level(logging.INFO)
    customization = await insert_customization(db)
    session = checkout_session(customization, metadata=metadata(customization))
    event = stripe_event(session)

    first = await deliver(client, event)
    redelivered = await deliver(client, event)

    assert first.status_code == redelivered.status_code == 200
    assert first.json()["outcome"] == "dead_lettered"
    assert await table_counts(db) == {**NOTHING, "failed_jobs": 1}
    cursor = await db.execute("select * from failed_jobs")
    record = await cursor.fetchone()
    assert record is not None
    assert record["id"] == dead_letter_id(event["id"])
    assert record["job_type"] == "stripe.checkout"
    assert record["order_id"] is None
    assert record["event_data"] == event
    assert says in record["error_message"]
    assert await topic_size(kafka_bootstrap, topics.requested) == 0

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "a dead letter must be logged as a WARNING"
    assert says in warnings[0].getMessage()
    assert event["id"] in warnings[0].getMessage()


async def test_logs_carry_ids_but_never_the_secret_or_the_payload(
    client: httpx.AsyncClient, db: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))
    unprocessable = stripe_event(checkout_session(None, metadata={}))

    assert (await deliver(client, event)).status_code == 200
    assert (await deliver(client, unprocessable)).status_code == 200
    assert (await deliver(client, event, secret="whsec_wrong")).status_code == 400

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert event["id"] in text
    assert "checkout.session.completed" in text
    assert "order_id=" in text
    assert SECRET not in text
    assert "maya@example.com" not in text
    assert event["data"]["object"]["payment_intent"] not in text
