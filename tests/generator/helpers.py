"""Rows, messages and a running generator for the generator's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from songswipe.generator.service import GeneratorService
from songswipe.generator.settings import GeneratorSettings
from songswipe.shared.db import Connection
from songswipe.shared.kafka import make_producer, publish
from songswipe.shared.messages import Message, SongBrief, VariantGenerate
from songswipe.shared.topics import Topics
from tests.support import insert_customization, insert_order

TEST_RETRY_DELAYS_MS = (300, 600, 900, 1200)
START_TIMEOUT_S = 30


def settings_for(
    *,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    songs_dir: Path,
    fake_url: str | None = None,
    **overrides: Any,
) -> GeneratorSettings:
    """Settings of a test generator: its own topics, no ``.env``, no metrics."""
    values: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap_servers": kafka_bootstrap,
        "kafka_topic_prefix": topics.prefix,
        "kafka_partitions": 3,
        "database_url": database_url,
        "database_pool_max_size": 4,
        "generator_provider": "offline",
        "songs_dir": songs_dir,
        "supabase_url": None,
        "supabase_service_role_key": None,
        "generator_concurrency": 4,
        "generator_retry_delays_ms": ",".join(map(str, TEST_RETRY_DELAYS_MS)),
        "generator_retry_jitter": 0.2,
        "generator_shutdown_grace_s": 5,
        "metrics_port": 0,
    }
    if fake_url is not None:
        values |= {
            "generator_provider": "elevenlabs",
            "elevenlabs_api_key": "test-key",
            "elevenlabs_base_url": fake_url,
            "elevenlabs_read_timeout_s": 20,
        }
    values |= overrides
    return GeneratorSettings(_env_file=None, **values)


def settings_env(settings: GeneratorSettings) -> dict[str, str]:
    """The same settings as environment variables, for a subprocess."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, tuple):
            value = ",".join(map(str, value))
        env[name.upper()] = str(value)
    return env


@asynccontextmanager
async def running_generator(
    settings: GeneratorSettings,
) -> AsyncIterator[GeneratorService]:
    """A generator in this process, stopped (SIGTERM-style) on exit."""
    service = GeneratorService(settings)
    running = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait(
        {running, ready}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    if running in done:
        ready.cancel()
        running.result()
        raise AssertionError("the generator stopped before it was ready")
    if ready not in done:
        running.cancel()
        raise AssertionError(f"the generator was not ready in {START_TIMEOUT_S} s")
    try:
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(running, timeout=30)


async def order_with_variants(
    db: Connection,
    *,
    variants: tuple[int, ...] = (1,),
    status: str = "pending",
    **customization: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A customization, its order (generating), and ``song_variants`` rows."""
    created = await insert_customization(db, song_length_seconds=10, **customization)
    order = await insert_order(db, created, status="generating")
    for number in variants:
        await db.execute(
            "insert into song_variants (order_id, variant_number, status)"
            " values (%s, %s, %s)",
            (order["id"], number, status),
        )
    return created, order


def job_for(
    customization: dict[str, Any], order: dict[str, Any], variant: int
) -> VariantGenerate:
    return VariantGenerate(
        order_id=order["id"],
        user_id=order["user_id"],
        variant_number=variant,
        brief=SongBrief.from_customization(customization),
    )


async def publish_all(bootstrap: str, topic: str, messages: list[Message]) -> None:
    producer = make_producer(bootstrap, client_id="generator-tests")
    await producer.start()
    try:
        for message in messages:
            await publish(producer, topic, message)
    finally:
        await producer.stop()


async def variant_row(db: Connection, order_id: Any, variant: int) -> dict[str, Any]:
    cursor = await db.execute(
        "select * from song_variants where order_id = %s and variant_number = %s",
        (order_id, variant),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def variant_status(db: Connection, order_id: Any, variant: int) -> str:
    return str((await variant_row(db, order_id, variant))["status"])
