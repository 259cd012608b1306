"""What the agents share: a database pool and a Kafka producer."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from mode import Service

from songswipe.orchestrator.settings import OrchestratorSettings
from songswipe.shared.db import Pool, open_pool
from songswipe.shared.errors import KafkaUnavailable, PipelineError
from songswipe.shared.kafka import ensure_topics, make_producer

logger = logging.getLogger(__name__)


class Resources:
    """Opened before faust starts consuming, closed after it stopped."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self._pool: Pool | None = None
        self._producer: AIOKafkaProducer | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("resources are not open")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("resources are not open")
        return self._producer

    async def open(self) -> None:
        settings = self.settings
        # Before faust subscribes: the table's changelog must exist, compacted
        # and with as many partitions as the topics it is co-partitioned with.
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            settings.topics.specs(settings.kafka_partitions),
        )
        self._pool = await open_pool(
            settings.database_url, max_size=settings.database_pool_max_size
        )
        producer = make_producer(
            settings.kafka_bootstrap_servers,
            client_id="songswipe-orchestrator",
            linger_ms=settings.orchestrator_kafka_linger_ms,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise KafkaUnavailable(
                f"cannot reach Kafka at {settings.kafka_bootstrap_servers}"
            ) from exc
        self._producer = producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class ResourcesService(Service):
    """Starts the resources with the faust worker, ahead of the app."""

    def __init__(self, resources: Resources) -> None:
        super().__init__()
        self.resources = resources

    async def on_start(self) -> None:
        try:
            await self.resources.open()
        except PipelineError as exc:
            logger.error(
                "Orchestrator cannot start: %s; fix it, then start it again", exc
            )
            raise
        logger.info("Database pool and Kafka producer ready")

    async def on_stop(self) -> None:
        await self.resources.close()
