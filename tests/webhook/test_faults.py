"""No crash point loses an order: Kafka and Postgres faults, redelivery, sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from songswipe.shared.db import Connection, Pool, open_pool
from songswipe.shared.kafka import ensure_topics, make_producer
from songswipe.shared.messages import GenerationRequested
from songswipe.shared.topics import Topics
from songswipe.webhook.app import Runtime, create_app
from songswipe.webhook.metrics import WebhookMetrics
from songswipe.webhook.sweep import SweepPolicy, sweep
from tests.conftest import TEST_PARTITIONS
from tests.support import consume, eventually, insert_customization, insert_order
from tests.webhook.conftest import SettingsFactory, running
from tests.webhook.helpers import (
    TcpProxy,
    checkout_session,
    deliver,
    stripe_event,
    topic_size,
)


async def one_order(db: Connection) -> dict[str, object]:
    cursor = await db.execute("select * from orders")
    orders = await cursor.fetchall()
    assert len(orders) == 1
    return orders[0]


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        deadline = time.monotonic() + 30
        while topic in await admin.list_topics():
            assert time.monotonic() < deadline, f"{topic} was not deleted"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def test_publish_failing_after_the_insert_answers_503_then_redelivery_publishes(
    make_settings: SettingsFactory,
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization)
    event = stripe_event(session)
    app = create_app(make_settings(webhook_publish_timeout_s=1.5))

    async with running(app) as client:
        # The broker refuses the topic (auto-create is off), as when Kafka
        # loses it or cannot take writes: the order is already committed.
        await delete_topic(kafka_bootstrap, topics.requested)
        failed = await deliver(client, event)
        ready = await client.get("/readyz")

        assert failed.status_code == 503
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "database": True, "kafka": False}
        order = await one_order(db)
        assert order["status"] == "paid"
        assert order["published_at"] is None
        cursor = await db.execute("select count(*) as n from stripe_events")
        assert await cursor.fetchone() == {"n": 0}

        await ensure_topics(kafka_bootstrap, topics.specs(TEST_PARTITIONS))
        # Stripe's retry of the event and the session under another event id,
        # at once: they take the order over from the failed delivery once.
        redelivered, other_event_id = await asyncio.gather(
            deliver(client, event), deliver(client, stripe_event(session))
        )

    assert redelivered.status_code == other_event_id.status_code == 200
    outcomes = {redelivered.json()["outcome"], other_event_id.json()["outcome"]}
    assert outcomes == {"republished", "duplicate"}
    order = await one_order(db)
    assert order["published_at"] is not None
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert [m.order_id for m in messages] == [order["id"]]
    assert await topic_size(kafka_bootstrap, topics.requested) == 1


async def test_stopped_producer_answers_503_and_a_restart_publishes_on_redelivery(
    make_settings: SettingsFactory,
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization)

    crashed = create_app(make_settings(webhook_publish_timeout_s=1.0))
    async with running(crashed) as client:
        runtime: Runtime = crashed.state.runtime
        await runtime.producer.stop()
        failed = await deliver(client, stripe_event(session))

    assert failed.status_code == 503
    assert (await one_order(db))["published_at"] is None

    restarted = create_app(make_settings(webhook_publish_timeout_s=1.0))
    async with running(restarted) as client:
        # Stripe may also send the session under another event id.
        redelivered = await deliver(client, stripe_event(session))

    assert redelivered.status_code == 200
    assert redelivered.json()["outcome"] == "republished"
    assert (await one_order(db))["published_at"] is not None
    assert await topic_size(kafka_bootstrap, topics.requested) == 1


async def test_database_down_answers_503_and_writes_nothing(
    make_settings: SettingsFactory,
    database_url: str,
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))
    target = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = TcpProxy(str(target["host"]), int(str(target["port"])))
    await proxy.start()
    proxied_url = database_url.replace(
        f"{target['host']}:{target['port']}", f"127.0.0.1:{proxy.port}"
    )
    app = create_app(
        make_settings(database_url=proxied_url, webhook_database_timeout_s=1.0)
    )

    async with running(app) as client:
        await proxy.cut()
        broken_connection = await deliver(client, event)
        no_connection = await deliver(client, event)
        ready = await client.get("/readyz")

        await proxy.restore()

        async def ready_again() -> bool:
            return (await client.get("/readyz")).status_code == 200

        # The pool reconnects with backoff; Stripe redelivers minutes later.
        await eventually(ready_again, timeout_s=15, what="the webhook ready again")
        redelivered = await deliver(client, event)
    await proxy.cut()

    assert broken_connection.status_code == 503
    assert no_connection.status_code == 503
    assert ready.status_code == 503
    assert ready.json()["database"] is False
    assert redelivered.status_code == 200
    assert redelivered.json()["outcome"] == "order_recorded"
    await one_order(db)
    assert await topic_size(kafka_bootstrap, topics.requested) == 1


async def test_order_committed_before_a_crash_is_published_on_redelivery(
    client: httpx.AsyncClient, db: Connection, topics: Topics, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db)
    session = checkout_session(customization)
    # What a process killed between the commit and the publish leaves behind;
    # Stripe delivers again minutes later.
    left = await insert_order(db, customization, session_id=session["id"])
    await db.execute(
        "update orders set created_at = now() - interval '5 minutes' where id = %s",
        (left["id"],),
    )

    response = await deliver(client, stripe_event(session))

    assert response.status_code == 200
    assert response.json() == {
        "received": True,
        "outcome": "republished",
        "order_id": str(left["id"]),
    }
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert [m.order_id for m in messages] == [left["id"]]


@pytest.fixture
async def sweep_deps(
    database_url: str, kafka_bootstrap: str
) -> AsyncIterator[tuple[Pool, AIOKafkaProducer]]:
    pool = await open_pool(database_url, max_size=2)
    producer = make_producer(kafka_bootstrap, client_id="webhook-sweep-test")
    await producer.start()
    yield pool, producer
    await producer.stop()
    await pool.close()


async def test_sweep_republishes_an_order_left_paid_once(
    sweep_deps: tuple[Pool, AIOKafkaProducer],
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    pool, producer = sweep_deps
    customization = await insert_customization(db)
    left = await insert_order(db, customization)
    generating = await insert_order(db, customization, status="generating")
    policy = SweepPolicy(after_s=0, republish_after_s=3600)
    metrics = WebhookMetrics()

    first = await sweep(pool, producer, topics, policy, metrics)
    second = await sweep(pool, producer, topics, policy, metrics)

    assert (first, second) == (1, 0)
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert [m.order_id for m in messages] == [left["id"]]
    assert messages[0].order_id != generating["id"]
    cursor = await db.execute(
        "select published_at from orders where id = %s", (left["id"],)
    )
    assert (await cursor.fetchone() or {}).get("published_at") is not None
    assert metrics.sweep_republished._value.get() == 1


async def test_sweep_republishes_an_order_published_but_never_picked_up(
    sweep_deps: tuple[Pool, AIOKafkaProducer],
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    pool, producer = sweep_deps
    customization = await insert_customization(db)
    stuck = await insert_order(db, customization)
    recent = await insert_order(db, customization)
    await db.execute(
        "update orders set published_at = now() - interval '2 hours' where id = %s",
        (stuck["id"],),
    )
    await db.execute(
        "update orders set published_at = now() where id = %s", (recent["id"],)
    )

    swept = await sweep(
        pool,
        producer,
        topics,
        SweepPolicy(after_s=0, republish_after_s=3600),
    )

    assert swept == 1
    messages = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert [m.order_id for m in messages] == [stuck["id"]]


async def test_sweep_leaves_young_orders_and_orders_a_delivery_holds(
    sweep_deps: tuple[Pool, AIOKafkaProducer],
    database_url: str,
    db: Connection,
    topics: Topics,
) -> None:
    pool, producer = sweep_deps
    customization = await insert_customization(db)
    held = await insert_order(db, customization)

    young = await sweep(pool, producer, topics, SweepPolicy(after_s=600))
    other = await psycopg.AsyncConnection.connect(database_url)
    async with other, other.transaction():
        await other.execute(
            "select 1 from orders where id = %s for update", (held["id"],)
        )
        while_held = await sweep(pool, producer, topics, SweepPolicy(after_s=0))
    released = await sweep(pool, producer, topics, SweepPolicy(after_s=0))

    assert (young, while_held, released) == (0, 0, 1)


async def test_background_sweeper_hands_on_an_order_left_paid(
    make_settings: SettingsFactory,
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    customization = await insert_customization(db)
    left = await insert_order(db, customization)
    app = create_app(
        make_settings(
            webhook_sweep_interval_s=0.2,
            webhook_sweep_after_s=1.5,
            webhook_publish_timeout_s=0.5,
        )
    )

    async def published() -> bool:
        cursor = await db.execute(
            "select published_at from orders where id = %s", (left["id"],)
        )
        row = await cursor.fetchone()
        return row is not None and row["published_at"] is not None

    async with running(app) as client:
        await eventually(published, timeout_s=15, what="the sweep publishing")
        metrics = (await client.get("/metrics")).text

    assert "songswipe_webhook_sweep_republished_total 1.0" in metrics
    assert await topic_size(kafka_bootstrap, topics.requested) == 1
