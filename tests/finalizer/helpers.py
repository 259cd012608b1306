"""A finalizer running in the test's own process, and its settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from songswipe.finalizer.service import run
from songswipe.finalizer.settings import FinalizerSettings
from songswipe.shared.topics import Topics

STOP_TIMEOUT_S = 10.0


def finalizer_settings(
    *, kafka_bootstrap: str, database_url: str, topics: Topics, **overrides: Any
) -> FinalizerSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap_servers": kafka_bootstrap,
        "kafka_topic_prefix": topics.prefix,
        "kafka_partitions": 3,
        "database_url": database_url,
        "database_pool_max_size": 2,
        "metrics_port": 0,
    }
    values |= overrides
    return FinalizerSettings(_env_file=None, **values)


@asynccontextmanager
async def running_finalizer(settings: FinalizerSettings) -> AsyncIterator[None]:
    """The finalizer's ``run`` as a task; stopped like SIGTERM stops it."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)


async def committed_total(settings: FinalizerSettings) -> int:
    """The sum of the finalizer group's committed offsets on its two topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for topic in (settings.topics.settled, settings.topics.dlq):
            for partition in range(settings.kafka_partitions):
                with suppress(Exception):
                    offset = await consumer.committed(TopicPartition(topic, partition))
                    total += offset or 0
        return total
    finally:
        await consumer.stop()
