"""The finalizer against real Kafka and Postgres: settlements and dead letters."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from songswipe.finalizer.settings import FinalizerSettings
from songswipe.shared.db import Connection
from songswipe.shared.kafka import make_producer
from songswipe.shared.messages import DeadLetter, GenerationSettled, VariantGenerate
from songswipe.shared.topics import Topics
from tests.finalizer.helpers import (
    PausableProxy,
    committed_total,
    finalizer_settings,
    running_finalizer,
)
from tests.orchestrator.helpers import send
from tests.support import eventually, insert_customization, insert_order


@pytest.fixture
def settings(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> FinalizerSettings:
    return finalizer_settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )


async def generating_order(db: Connection) -> dict[str, Any]:
    return await insert_order(db, await insert_customization(db), status="generating")


async def order_row(db: Connection, order_id: uuid.UUID) -> dict[str, Any]:
    cursor = await db.execute("select * from orders where id = %s", (order_id,))
    row = await cursor.fetchone()
    assert row is not None
    return row


async def wait_committed(settings: FinalizerSettings, count: int) -> None:
    async def committed() -> bool:
        return await committed_total(settings) >= count

    await eventually(committed, what=f"{count} offsets committed")


def settled(order_id: uuid.UUID, complete: int, **fields: Any) -> GenerationSettled:
    return GenerationSettled(
        order_id=order_id, complete_count=complete, failed_count=3 - complete, **fields
    )


def dead_letter(order: dict[str, Any], variant: int = 2) -> DeadLetter:
    work = VariantGenerate(
        order_id=order["id"],
        user_id=order["user_id"],
        variant_number=variant,
        brief={
            "recipient_name": "Maya",
            "sender_name": "Sam",
            "occasion": "birthday",
            "mood": "joyful",
            "genre": "pop",
            "length_s": 30,
        },
    )
    return DeadLetter(
        order_id=order["id"],
        job_type="variant.generate",
        source_topic="t.variant.generate",
        payload=work.model_dump(mode="json"),
        variant_number=variant,
        error_type="ProviderError",
        error_message="ElevenLabs returned 400: prompt rejected",
        error_stack="Traceback (most recent call last):\n  ...",
        attempt_count=5,
    )


async def test_a_settlement_with_a_complete_variant_completes_the_order_once(
    db: Connection, topics: Topics, settings: FinalizerSettings, kafka_bootstrap: str
) -> None:
    order = await generating_order(db)
    first_at = datetime.now(UTC) - timedelta(minutes=1)
    first = settled(order["id"], 1, settled_at=first_at)

    async with running_finalizer(settings):
        await send(kafka_bootstrap, topics.settled, first, settled(order["id"], 3))
        await wait_committed(settings, 2)

    row = await order_row(db, order["id"])
    assert row["status"] == "completed"
    assert row["completed_at"] == first_at
    assert row["error"] is None


async def test_a_settlement_with_no_complete_variant_fails_the_order(
    db: Connection, topics: Topics, settings: FinalizerSettings, kafka_bootstrap: str
) -> None:
    order = await generating_order(db)

    async with running_finalizer(settings):
        await send(kafka_bootstrap, topics.settled, settled(order["id"], 0))
        await wait_committed(settings, 1)

    row = await order_row(db, order["id"])
    assert row["status"] == "failed"
    assert row["completed_at"] is not None
    assert row["error"] == "no variant could be generated"


async def test_a_dead_letter_published_twice_gives_one_failed_jobs_row(
    db: Connection,
    topics: Topics,
    settings: FinalizerSettings,
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="songswipe.finalizer")
    order = await generating_order(db)
    letter = dead_letter(order)

    async with running_finalizer(settings):
        await send(kafka_bootstrap, topics.dlq, letter, letter)
        await wait_committed(settings, 2)

    cursor = await db.execute("select * from failed_jobs")
    rows = await cursor.fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == letter.message_id
    assert row["order_id"] == order["id"]
    assert row["job_type"] == "variant.generate"
    assert row["event_data"] == letter.payload
    assert (
        row["error_message"]
        == "ProviderError: ElevenLabs returned 400: prompt rejected"
    )
    assert row["error_stack"] == letter.error_stack
    assert row["retry_count"] == 5
    assert row["source_topic"] == "t.variant.generate"
    assert row["failed_at"] == letter.failed_at
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("songswipe.")
    ]
    assert len(warnings) == 1
    assert str(order["id"]) in warnings[0].getMessage()
    assert f"songswipe dlq replay {letter.message_id}" in warnings[0].getMessage()


async def test_malformed_messages_are_kept_as_failed_jobs_and_committed(
    db: Connection, topics: Topics, settings: FinalizerSettings, kafka_bootstrap: str
) -> None:
    order = await generating_order(db)
    producer = make_producer(kafka_bootstrap, client_id="finalizer-tests")
    await producer.start()
    key = str(order["id"]).encode()
    for topic in (topics.settled, topics.dlq):
        await producer.send_and_wait(topic, b"{not json", key=key)
        await producer.send_and_wait(topic, b'{"order_id": "nope"}', key=key)
    await producer.stop()

    async with running_finalizer(settings):
        await send(kafka_bootstrap, topics.settled, settled(order["id"], 2))
        await wait_committed(settings, 5)

    assert (await order_row(db, order["id"]))["status"] == "completed"
    cursor = await db.execute(
        "select order_id, job_type, source_topic, event_data, error_message"
        " from failed_jobs order by source_topic, event_data->>'raw'"
    )
    rows = await cursor.fetchall()
    assert [(r["source_topic"], r["event_data"]["raw"]) for r in rows] == [
        (topics.dlq, '{"order_id": "nope"}'),
        (topics.dlq, "{not json"),
        (topics.settled, '{"order_id": "nope"}'),
        (topics.settled, "{not json"),
    ]
    assert {r["order_id"] for r in rows} == {order["id"]}
    assert [r["job_type"] for r in rows] == ["generation.dlq"] * 2 + [
        "generation.settled"
    ] * 2
    assert all("message rejected" in r["error_message"] for r in rows)


async def test_while_the_database_is_down_nothing_is_committed_then_it_catches_up(
    db: Connection, topics: Topics, kafka_bootstrap: str, database_url: str
) -> None:
    before, order = await generating_order(db), await generating_order(db)
    target = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = PausableProxy(str(target["host"]), int(target["port"]))
    await proxy.start()
    proxied_url = database_url.replace(
        f"{target['host']}:{target['port']}", f"127.0.0.1:{proxy.port}"
    )
    settings = finalizer_settings(
        kafka_bootstrap=kafka_bootstrap, database_url=proxied_url, topics=topics
    )

    try:
        async with running_finalizer(settings):
            await send(kafka_bootstrap, topics.settled, settled(before["id"], 1))
            await wait_committed(settings, 1)

            await proxy.pause()
            await send(kafka_bootstrap, topics.settled, settled(order["id"], 1))
            await asyncio.sleep(2)
            assert (await order_row(db, order["id"]))["status"] == "generating"
            assert await committed_total(settings) == 1

            await proxy.resume()
            await wait_committed(settings, 2)
    finally:
        await proxy.stop()

    assert (await order_row(db, order["id"]))["status"] == "completed"


async def test_a_dead_letter_that_leaves_no_variant_open_settles_a_reopened_order(
    db: Connection, topics: Topics, settings: FinalizerSettings, kafka_bootstrap: str
) -> None:
    order = await generating_order(db)
    await db.execute(
        "insert into song_variants (order_id, variant_number, status, storage_path)"
        " values (%(id)s, 1, 'failed', null), (%(id)s, 2, 'failed', null),"
        " (%(id)s, 3, 'failed', null)",
        {"id": order["id"]},
    )

    async with running_finalizer(settings):
        await send(kafka_bootstrap, topics.dlq, dead_letter(order, variant=2))
        await wait_committed(settings, 1)

    row = await order_row(db, order["id"])
    assert row["status"] == "failed"
    assert row["completed_at"] is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m songswipe.finalizer``, logging to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "songswipe.finalizer"],
            env=env,
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_sigterm_stops_the_finalizer_process_cleanly(
    db: Connection,
    topics: Topics,
    settings: FinalizerSettings,
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    order = await generating_order(db)
    metrics_port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_PARTITIONS": "3",
        "DATABASE_URL": database_url,
        "METRICS_PORT": str(metrics_port),
    }
    log_path = tmp_path / "finalizer.log"
    process = start_process(env, log_path)
    try:
        await send(kafka_bootstrap, topics.settled, settled(order["id"], 3))

        async def completed() -> bool:
            return (await order_row(db, order["id"]))["status"] == "completed"

        await eventually(completed, timeout_s=30, what="order completed")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}")).text
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 15)
    finally:
        if process.poll() is None:
            process.kill()

    assert exit_code == 0, log_path.read_text()
    assert "Finalizer stopped" in log_path.read_text()
    assert (
        'songswipe_finalizer_orders_settled_total{outcome="completed"} 1.0' in metrics
    )


async def test_many_settlements_at_once_each_settle_their_order_around_a_locked_one(
    db: Connection,
    database_url: str,
    topics: Topics,
    settings: FinalizerSettings,
    kafka_bootstrap: str,
) -> None:
    orders = [await generating_order(db) for _ in range(30)]
    locked = orders[0]
    missing = uuid.uuid4()
    blocker = await psycopg.AsyncConnection.connect(database_url)
    try:
        # Another transaction holds one order: the rest must not wait for it.
        await blocker.execute(
            "select 1 from orders where id = %s for update", (locked["id"],)
        )
        async with running_finalizer(settings):
            # The locked order first, fetched on its own: what comes after
            # must not queue behind it.
            await send(kafka_bootstrap, topics.settled, settled(locked["id"], 0))
            await asyncio.sleep(1.0)
            await send(
                kafka_bootstrap,
                topics.settled,
                *(settled(o["id"], n % 2) for n, o in enumerate(orders) if n),
                settled(missing, 1),
            )

            async def others_settled() -> bool:
                cursor = await db.execute(
                    "select count(*) as n from orders where status <> 'generating'"
                )
                row = await cursor.fetchone()
                return row is not None and row["n"] == len(orders) - 1

            await eventually(others_settled, what="29 orders settled")
            assert (await order_row(db, locked["id"]))["status"] == "generating"
            await blocker.rollback()
            await wait_committed(settings, len(orders) + 1)
    finally:
        await blocker.close()

    for n, order in enumerate(orders):
        row = await order_row(db, order["id"])
        assert row["status"] == ("completed" if n % 2 else "failed")
        assert row["completed_at"] is not None
