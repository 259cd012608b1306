"""Finished-only commits and settings validation."""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from songswipe.shared.kafka import (
    OffsetTracker,
    commit_offsets,
    ensure_topics,
    make_consumer,
)
from songswipe.shared.settings import ServiceSettings
from songswipe.shared.topics import Topics
from tests.support import eventually

TP = TopicPartition("variant.generate", 0)


def test_commit_waits_for_the_oldest_unfinished_message() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start(TP, offset)

    tracker.finish(TP, 12)
    tracker.finish(TP, 11)
    assert tracker.take_committable() == {}

    tracker.finish(TP, 10)
    assert tracker.take_committable() == {TP: 13}
    assert tracker.take_committable() == {}
    assert tracker.in_flight == 0


def test_commit_advances_as_far_as_the_finished_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2, 3):
        tracker.start(TP, offset)

    tracker.finish(TP, 0)
    tracker.finish(TP, 2)

    assert tracker.take_committable() == {TP: 1}
    assert tracker.in_flight == 2


async def test_a_commit_the_broker_keeps_refusing_gives_up_in_time(
    kafka_bootstrap: str, topics: Topics
) -> None:
    name = topics.requested
    tp = TopicPartition(name, 0)
    consumer = make_consumer(
        kafka_bootstrap, group_id=f"commit-{uuid.uuid4().hex}", client_id="tests"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        assert await commit_offsets(consumer, {tp: 0}, timeout_s=5)

        # aiokafka retries an unknown partition's commit without end.
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([name])

            async def deleted() -> bool:
                return name not in await admin.list_topics()

            await eventually(deleted, timeout_s=10, what=f"{name} deleted")
        finally:
            await admin.close()
        started_s = time.monotonic()
        committed = await commit_offsets(consumer, {tp: 1}, timeout_s=2)
        elapsed_s = time.monotonic() - started_s
    finally:
        await consumer.stop()
        await ensure_topics(kafka_bootstrap, topics.specs(1))

    assert committed is False
    assert elapsed_s < 4


def test_database_url_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:6543/postgres")

    assert ServiceSettings().database_url == "postgresql://u:p@db:6543/postgres"


def test_database_url_must_be_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:p@db/x")

    with pytest.raises(ValidationError, match="postgresql://"):
        ServiceSettings()
