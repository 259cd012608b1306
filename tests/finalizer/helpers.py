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


class PausableProxy:
    """A TCP proxy in front of Postgres that can go dark and come back.

    ``pause`` drops every connection and refuses new ones, like a database
    that went away; ``resume`` listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def pause(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def resume(self) -> None:
        await self.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self.pause()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, upstream_writer}
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer),
            self._pipe(upstream_reader, client_writer),
        )
        self._writers -= {client_writer, upstream_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
