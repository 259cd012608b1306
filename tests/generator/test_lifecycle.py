"""Stopping, restarting and unreadable input: nothing finished is redone,
nothing unfinished is lost, and a held retry keeps its due time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from songswipe.generator.service import GeneratorService
from songswipe.generator.settings import GeneratorSettings
from songswipe.shared.db import Connection
from songswipe.shared.kafka import make_producer
from songswipe.shared.messages import DeadLetter, VariantCompleted
from songswipe.shared.topics import Topics
from tests.generator.fake_elevenlabs import FakeElevenLabs, Reply, fake_elevenlabs
from tests.generator.helpers import (
    job_for,
    order_with_variants,
    publish_all,
    running_generator,
    settings_for,
    variant_status,
)
from tests.support import consume, eventually


@pytest.fixture
def fake() -> Iterator[FakeElevenLabs]:
    with fake_elevenlabs() as server:
        yield server


async def _started(
    settings: GeneratorSettings,
) -> tuple[GeneratorService, asyncio.Task[None]]:
    service = GeneratorService(settings)
    running = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), timeout=30)
    return service, running


async def test_sigterm_lets_work_in_flight_finish_within_the_grace_period(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    fake: FakeElevenLabs,
    tmp_path: Path,
) -> None:
    fake.plan("Rosa", [Reply(delay_s=1.5)])
    customization, order = await order_with_variants(db, recipient_name="Rosa")
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=tmp_path,
        fake_url=fake.url,
    )
    service, running = await _started(settings)
    await publish_all(
        kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
    )

    async def in_flight() -> bool:
        return len(fake.received("Rosa")) == 1

    await eventually(in_flight, what="generation in flight")
    service.request_stop()
    await asyncio.wait_for(running, timeout=10)

    assert await variant_status(db, order["id"], 1) == "complete"
    completions = await consume(
        kafka_bootstrap, topics.completed, VariantCompleted, expect=1, settle_s=0.2
    )
    assert [c.status for c in completions] == ["complete"]

    # Its offset was committed: a new generator has nothing to redo.
    async with running_generator(settings):
        await asyncio.sleep(1.5)
    assert len(fake.received("Rosa")) == 1


async def test_work_cut_off_by_the_grace_period_is_delivered_again(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    fake: FakeElevenLabs,
    tmp_path: Path,
) -> None:
    fake.plan("Hugo", [Reply(delay_s=3)])
    customization, order = await order_with_variants(db, recipient_name="Hugo")
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=tmp_path,
        fake_url=fake.url,
        generator_shutdown_grace_s=0.2,
    )
    service, running = await _started(settings)
    await publish_all(
        kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
    )

    async def in_flight() -> bool:
        return len(fake.received("Hugo")) == 1

    await eventually(in_flight, what="generation in flight")
    service.request_stop()
    await asyncio.wait_for(running, timeout=10)
    assert await variant_status(db, order["id"], 1) == "generating"

    async with running_generator(settings):

        async def complete() -> bool:
            return await variant_status(db, order["id"], 1) == "complete"

        await eventually(complete, what="the cut-off variant completed")

    assert len(fake.received("Hugo")) == 2


async def test_a_held_retry_keeps_its_due_time_across_a_restart(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    fake: FakeElevenLabs,
    tmp_path: Path,
) -> None:
    customization, order = await order_with_variants(db, recipient_name="Vera")
    due_at = datetime.now(UTC) + timedelta(seconds=3)
    retry = job_for(customization, order, 1).model_copy(
        update={"attempt": 2, "due_at": due_at}
    )
    await publish_all(kafka_bootstrap, topics.retry(1), [retry])
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=tmp_path,
        fake_url=fake.url,
    )

    async with running_generator(settings):
        await asyncio.sleep(1.0)
    assert fake.received("Vera") == [], "a retry ran before it was due"

    async with running_generator(settings):

        async def complete() -> bool:
            return await variant_status(db, order["id"], 1) == "complete"

        await eventually(complete, what="the held retry completed")

    [request] = fake.received("Vera")
    assert request.wall_at >= due_at.timestamp()


async def test_an_unreadable_message_is_dead_lettered_and_work_goes_on(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    fake: FakeElevenLabs,
    tmp_path: Path,
) -> None:
    customization, order = await order_with_variants(db, recipient_name="Emil")
    broken_order_id = uuid.uuid4()
    producer = make_producer(kafka_bootstrap, client_id="generator-tests")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.generate, b"{not json", key=str(broken_order_id).encode()
        )
    finally:
        await producer.stop()
    await publish_all(
        kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=tmp_path,
        fake_url=fake.url,
    )

    async with running_generator(settings):

        async def complete() -> bool:
            return await variant_status(db, order["id"], 1) == "complete"

        await eventually(complete, what="the readable message completed")
        letters = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=1)

    [letter] = letters
    assert letter.error_type == "MalformedMessage"
    assert letter.order_id == broken_order_id
    assert letter.payload == {"raw": "{not json"}
    assert letter.source_topic == topics.generate


async def test_a_second_generator_joining_does_not_redo_work_in_flight(
    caplog: pytest.LogCaptureFixture,
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    fake: FakeElevenLabs,
    tmp_path: Path,
) -> None:
    # Well past a heartbeat interval (3 s), so the rebalance comes mid-flight,
    # and well within the grace period the revoked work may take.
    fake.plan("Ines", [Reply(delay_s=7)])
    customization, order = await order_with_variants(db, recipient_name="Ines")
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=tmp_path,
        fake_url=fake.url,
        generator_shutdown_grace_s=15,
    )

    caplog.set_level(logging.INFO, logger="songswipe.generator.service")

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
        )

        async def in_flight() -> bool:
            return len(fake.received("Ines")) == 1

        await eventually(in_flight, what="generation in flight")
        async with running_generator(settings):

            async def complete() -> bool:
                return await variant_status(db, order["id"], 1) == "complete"

            await eventually(complete, what="variant complete")
            await asyncio.sleep(1.0)

    assert "Partitions revoked: waiting" in caplog.text
    assert len(fake.received("Ines")) == 1
    completions = await consume(
        kafka_bootstrap, topics.completed, VariantCompleted, expect=1
    )
    assert len(completions) == 1
