"""The finalizer: final order statuses and the dead-letter monitor.

It reads ``generation.settled`` and ``generation.dlq`` in one consumer group
and commits an offset only once the message is in the database. Messages are
handled concurrently, and the settlements in flight share one statement. A
message that does not match its schema is logged and skipped (committed), so
one bad message never stops the rest; while the database is down nothing is
committed and the same message is tried again with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid5

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from songswipe.finalizer import metrics, store
from songswipe.finalizer.settings import FinalizerSettings
from songswipe.shared import topics as topic_names
from songswipe.shared.batching import Batcher
from songswipe.shared.db import Pool, is_transient, open_pool
from songswipe.shared.errors import (
    DatabaseUnavailable,
    KafkaUnavailable,
    MalformedMessage,
)
from songswipe.shared.kafka import (
    COMMIT_INTERVAL_S,
    OffsetTracker,
    commit_offsets,
    ensure_topics,
    make_consumer,
)
from songswipe.shared.messages import DeadLetter, GenerationSettled

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
#: Ids of unreadable messages' rows come from their place in Kafka, so a
#: redelivery stores no second row.
UNREADABLE_NAMESPACE = UUID("9d3f6b1e-58c2-4f0a-b7e4-2c61a8d0f935")
DB_RETRY_FIRST_DELAY_MS = 200
DB_RETRY_MAX_DELAY_MS = 10_000


class Finalizer:
    def __init__(self, settings: FinalizerSettings, pool: Pool) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.pool = pool
        self._offsets = OffsetTracker()
        self._settles: Batcher[UUID, GenerationSettled, store.Settlement] = Batcher(
            self._settle_many,
            self._settle_one,
            max_size=settings.finalizer_max_poll_records,
        )

    async def run(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Process messages until ``stop`` is set, committing finished ones
        every ``COMMIT_INTERVAL_S`` and once more at the end.

        Up to ``finalizer_max_poll_records`` messages are handled at once, as
        tasks, and the loop fetches more as they finish: a message that waits
        (on a row another transaction holds) holds up no other.
        """
        capacity = self.settings.finalizer_max_poll_records
        in_flight: set[asyncio.Task[None]] = set()
        committed_at_s = time.monotonic()
        while not stop.is_set():
            free = capacity - len(in_flight)
            if free > 0:
                batches = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=free
                )
                for tp, records in batches.items():
                    for record in records:
                        self._offsets.start(tp, record.offset)
                        task = asyncio.create_task(self._finish(tp, record, stop))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
            else:
                await asyncio.wait(
                    in_flight,
                    timeout=POLL_TIMEOUT_MS / 1000,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if time.monotonic() - committed_at_s >= COMMIT_INTERVAL_S:
                await self._commit(consumer)
                committed_at_s = time.monotonic()
        # Stopping: a message waiting out a database fault gives up at once.
        await asyncio.gather(*in_flight)
        await self._commit(consumer)

    async def _finish(
        self, tp: TopicPartition, record: ConsumerRecord[Any, Any], stop: asyncio.Event
    ) -> None:
        if await self._process(record, stop):
            self._offsets.finish(tp, record.offset)

    async def _process(
        self, record: ConsumerRecord[Any, Any], stop: asyncio.Event
    ) -> bool:
        """Handle one record, retrying database faults until ``stop``.

        Returns ``False`` when stopped before the record was handled.
        """
        delay_ms = DB_RETRY_FIRST_DELAY_MS
        while True:
            try:
                await self.handle(record)
                return True
            except DatabaseUnavailable as exc:
                delay_ms = min(delay_ms * 2, DB_RETRY_MAX_DELAY_MS)
                logger.warning(
                    "Database unavailable while handling %s offset=%d (%s);"
                    " not committing, retrying in %d ms",
                    record.topic,
                    record.offset,
                    exc,
                    delay_ms,
                )
                jittered_s = delay_ms * random.uniform(1.0, 1.2) / 1000
                try:
                    await asyncio.wait_for(stop.wait(), timeout=jittered_s)
                except TimeoutError:
                    continue
                return False
            except Exception:
                # Stopping here would stop every later message too, and a
                # restart would meet the same message again.
                logger.exception(
                    "Handling %s partition=%d offset=%d key=%r failed"
                    " unexpectedly; skipping it (it stays readable at that offset"
                    " until the topic's retention removes it)",
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                )
                return True

    async def handle(self, record: ConsumerRecord[Any, Any]) -> str:
        """Handle one message; return what it did."""
        topic, raw = record.topic, record.value
        try:
            if topic == self.topics.settled:
                return await self.on_settled(GenerationSettled.from_bytes(raw))
            if topic == self.topics.dlq:
                return await self.on_dead_letter(DeadLetter.from_bytes(raw))
        except MalformedMessage as exc:
            return await self._keep_unreadable(record, exc)
        except psycopg.Error as exc:
            if is_transient(exc):
                raise DatabaseUnavailable(str(exc)) from exc
            logger.exception(
                "The database refused the message on %s partition=%d offset=%d"
                " key=%r; skipping it (it stays readable at that offset until the"
                " topic's retention removes it)",
                topic,
                record.partition,
                record.offset,
                record.key,
            )
            return "refused"
        logger.warning("Skipping a message on unexpected topic %s", topic)
        return "unexpected"

    async def on_settled(self, settled: GenerationSettled) -> str:
        outcome = await self._settles(settled.order_id, settled)
        assert outcome is not None, "settling always says what happened"
        metrics.orders_settled.labels(outcome.value).inc()

        if outcome is store.Settlement.MISSING:
            logger.warning(
                "Settlement for order_id=%s, which does not exist; skipping it",
                settled.order_id,
            )
        elif outcome is store.Settlement.UNCHANGED:
            logger.info(
                "Order order_id=%s was already settled; duplicate ignored",
                settled.order_id,
            )
        else:
            logger.info(
                "Order order_id=%s is %s: %d complete, %d failed",
                settled.order_id,
                outcome,
                settled.complete_count,
                settled.failed_count,
            )
        return outcome.value

    async def _settle_many(
        self, batch: Sequence[tuple[UUID, GenerationSettled]]
    ) -> dict[UUID, store.Settlement | None]:
        async with self.pool.connection() as conn:
            outcomes = await store.settle_orders(conn, [s for _, s in batch])
        return dict(outcomes)

    async def _settle_one(
        self, _: UUID, settled: GenerationSettled
    ) -> store.Settlement | None:
        async with self.pool.connection() as conn:
            return await store.settle_order(conn, settled)

    async def _keep_unreadable(
        self, record: ConsumerRecord[Any, Any], exc: MalformedMessage
    ) -> str:
        """Store a message no retry can read as a ``failed_jobs`` row, once."""
        metrics.malformed.labels(record.topic).inc()
        job_type = (
            topic_names.GENERATION_SETTLED
            if record.topic == self.topics.settled
            else topic_names.GENERATION_DLQ
        )
        position = f"{record.topic}:{record.partition}:{record.offset}"
        letter = DeadLetter.unreadable(
            record.value,
            record.key,
            job_type=job_type,
            source_topic=record.topic,
            exc=exc,
            message_id=uuid5(UNREADABLE_NAMESPACE, position),
        )
        await self.on_dead_letter(letter)
        return "malformed"

    async def on_dead_letter(self, letter: DeadLetter) -> str:
        async with self.pool.connection() as conn:
            stored = await store.store_dead_letter(conn, letter)
            settled = await store.settle_from_variants(conn, letter.order_id)

        if settled is not None:
            metrics.orders_settled.labels(settled.value).inc()
            logger.info(
                "Order order_id=%s is %s: its last open variant was dead-lettered",
                letter.order_id,
                settled,
            )
        if not stored:
            metrics.dead_letters_duplicate.inc()
            logger.info(
                "Dead letter id=%s is already stored; duplicate ignored",
                letter.message_id,
            )
            return "duplicate"

        metrics.dead_letters_stored.labels(letter.job_type).inc()
        variant = f" variant={letter.variant_number}" if letter.variant_number else ""
        logger.warning(
            "Dead letter stored: order_id=%s%s job_type=%s failed after %d"
            " attempts: %s: %s. Inspect with `songswipe dlq list`, replay with"
            " `songswipe dlq replay %s` once the cause is fixed",
            letter.order_id,
            variant,
            letter.job_type,
            letter.attempt_count,
            letter.error_type,
            letter.error_message,
            letter.message_id,
        )
        return "stored"

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = self._offsets.take_committable()
        owned = consumer.assignment()
        self._offsets.forget(tp for tp in offsets if tp not in owned)
        offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not offsets:
            return
        await commit_offsets(consumer, offsets)


async def run(settings: FinalizerSettings, stop: asyncio.Event) -> None:
    """Run the finalizer until ``stop`` is set."""
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.topics.specs(settings.kafka_partitions),
    )
    pool = await open_pool(
        settings.database_url, max_size=settings.database_pool_max_size
    )
    consumer = make_consumer(
        settings.kafka_bootstrap_servers,
        settings.topics.settled,
        settings.topics.dlq,
        group_id=settings.group_id,
        client_id="songswipe-finalizer",
        max_poll_records=settings.finalizer_max_poll_records,
    )
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"cannot reach Kafka at {settings.kafka_bootstrap_servers}"
            ) from exc
        logger.info(
            "Finalizer consuming %s and %s as group %s",
            settings.topics.settled,
            settings.topics.dlq,
            settings.group_id,
        )
        await Finalizer(settings, pool).run(consumer, stop)
    finally:
        await consumer.stop()
        await pool.close()
        logger.info("Finalizer stopped")
