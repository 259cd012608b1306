"""The consumer loop: fetch as much work as there are free slots, run it as
asyncio tasks, hold retries until they are due, commit finished work only.

The process reads ``variant.generate`` and its retry tiers with one
consumer. A retry is a message whose ``due_at`` lies ahead; when one is
fetched early, its partition is held: the consumer seeks back to it and
pauses the partition until it is due, so nothing behind it on that partition
runs early, other partitions (fresh work above all) keep flowing, and no
offset past it is committed. The due time travels in the message, so a hold
survives a restart: the new process fetches the message again and holds it
again.

Back-pressure: with every slot busy the loop pauses every partition, so the
fetcher stops fetching, and asks for no records until a quarter of the slots
are free (one, for four slots or fewer); then it asks for as many records as
there are free slots. Refilling a slot at a time would pause and resume
every partition for each message. What was prefetched before the pause (one
fetch per partition at most) stays buffered for then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from songswipe.generator import metrics
from songswipe.generator.factory import make_provider, make_storage
from songswipe.generator.provider import MusicProvider
from songswipe.generator.retry import RetryPolicy
from songswipe.generator.settings import GeneratorSettings
from songswipe.generator.storage import SongStorage
from songswipe.generator.variants import Variants
from songswipe.generator.worker import VariantWorker
from songswipe.shared.db import open_pool
from songswipe.shared.errors import KafkaUnavailable, MalformedMessage
from songswipe.shared.kafka import (
    COMMIT_INTERVAL_S,
    OffsetTracker,
    commit_offsets,
    ensure_topics,
    make_consumer,
    make_producer,
)
from songswipe.shared.messages import VariantGenerate

logger = logging.getLogger(__name__)

CLIENT_ID = "songswipe-generator"
POLL_TIMEOUT_MS = 500
#: How often a process that stays full polls anyway: the group evicts a
#: consumer that does not poll for max.poll.interval.ms (300 s).
KEEPALIVE_POLL_S = 30.0


class GeneratorService:
    def __init__(
        self,
        settings: GeneratorSettings,
        *,
        provider: MusicProvider | None = None,
        storage: SongStorage | None = None,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._capacity = settings.generator_concurrency
        #: Full, the loop fetches again once no more than this many are busy.
        self._refill_at = self._capacity - max(1, self._capacity // 4)
        self._refill = asyncio.Event()
        self._provider = provider
        self._storage = storage
        self._stopping = asyncio.Event()
        #: Set once the consumer owns partitions (tests and benchmarks wait on it).
        self.ready = asyncio.Event()

        #: Work in flight and the partition it came from.
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._tracker = OffsetTracker()
        self._held: dict[TopicPartition, datetime] = {}
        #: Bumped when a partition is revoked: work started before that no
        #: longer counts towards its commits.
        self._epochs: defaultdict[TopicPartition, int] = defaultdict(int)
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at_s = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._worker: VariantWorker | None = None

    def request_stop(self) -> None:
        """Stop fetching; in-flight work gets the grace period to finish."""
        if not self._stopping.is_set():
            logger.info("Stop requested: no new work will be fetched")
        self._stopping.set()

    async def run(self) -> None:
        settings = self._settings
        bootstrap = settings.kafka_bootstrap_servers
        await ensure_topics(bootstrap, self._topics.specs(settings.kafka_partitions))

        async with AsyncExitStack() as stack:
            # A warm pool: growing it one connection at a time under the
            # first burst of work would delay that burst.
            pool = await open_pool(
                settings.database_url,
                min_size=settings.database_pool_max_size,
                max_size=settings.database_pool_max_size,
            )
            stack.push_async_callback(pool.close)
            provider = self._provider or make_provider(settings)
            stack.push_async_callback(provider.aclose)
            storage = self._storage or make_storage(settings)
            stack.push_async_callback(storage.aclose)

            producer = make_producer(
                bootstrap,
                client_id=CLIENT_ID,
                linger_ms=settings.generator_kafka_linger_ms,
            )
            await _start_kafka(producer.start(), bootstrap)
            stack.push_async_callback(producer.stop)

            consumer = make_consumer(
                bootstrap,
                group_id=settings.consumer_group_id,
                client_id=CLIENT_ID,
                max_poll_records=self._capacity,
            )
            topics = [self._topics.generate, *self._topics.retries]
            consumer.subscribe(topics, listener=_Rebalance(self))
            # The first rebalance may run inside start() and commits already.
            self._consumer = consumer
            self._worker = VariantWorker(
                provider=provider,
                storage=storage,
                variants=Variants(pool),
                producer=producer,
                topics=self._topics,
                retry_policy=RetryPolicy(
                    settings.generator_retry_delays_ms, settings.generator_retry_jitter
                ),
            )
            logger.info(
                "Generator starting on %s as group=%s: provider=%s storage=%s"
                " concurrency=%d retry_delays_ms=%s",
                ",".join(topics),
                settings.consumer_group_id,
                provider.name,
                storage.name,
                self._capacity,
                ",".join(str(d) for d in settings.generator_retry_delays_ms),
            )
            await _start_kafka(consumer.start(), bootstrap)
            stack.push_async_callback(consumer.stop)
            try:
                await self._consume()
            finally:
                await self._drain()
        logger.info("Generator stopped")

    async def _consume(self) -> None:
        consumer = self._require_consumer()
        while not self._stopping.is_set():
            self._release_due()
            free = self._capacity - len(self._tasks)
            if free <= 0:
                await self._wait_for_slot()
                continue

            self._sync_pauses(backpressure=False)
            batch = await consumer.getmany(
                timeout_ms=self._poll_timeout_ms(), max_records=free
            )
            for tp, records in batch.items():
                self._dispatch(tp, records)
            await self._commit_if_due()

    def _dispatch(self, tp: TopicPartition, records: list[Any]) -> None:
        worker = self._require_worker()
        now = datetime.now(UTC)
        for record in records:
            try:
                job = VariantGenerate.from_bytes(record.value)
            except MalformedMessage as exc:
                self._start(
                    tp,
                    record.offset,
                    worker.dead_letter_malformed(
                        record.value, record.key, record.topic, exc
                    ),
                )
                continue

            due_at = _due_at(job)
            if due_at is not None and due_at > now:
                self._hold(tp, record.offset, due_at)
                return
            self._start(
                tp, record.offset, worker.handle(job, source_topic=record.topic)
            )

    def _start(
        self, tp: TopicPartition, offset: int, work: Coroutine[Any, Any, Any]
    ) -> None:
        self._tracker.start(tp, offset)
        task = asyncio.create_task(self._finish(tp, offset, self._epochs[tp], work))
        self._tasks[task] = tp
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if len(self._tasks) <= self._refill_at:
            self._refill.set()

    async def _finish(
        self,
        tp: TopicPartition,
        offset: int,
        epoch: int,
        work: Coroutine[Any, Any, Any],
    ) -> None:
        metrics.IN_FLIGHT.inc()
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "Handling %s-%d offset=%d failed unexpectedly; the offset stays"
                " uncommitted, so the message is delivered again after a restart",
                tp.topic,
                tp.partition,
                offset,
            )
            return
        finally:
            metrics.IN_FLIGHT.dec()
        if self._epochs[tp] == epoch:
            self._tracker.finish(tp, offset)

    def _hold(self, tp: TopicPartition, offset: int, due_at: datetime) -> None:
        consumer = self._require_consumer()
        self._held[tp] = due_at
        consumer.seek(tp, offset)
        consumer.pause(tp)
        metrics.HELD_PARTITIONS.set(len(self._held))
        logger.info(
            "Holding %s-%d at offset=%d until %s: its next retry is not due yet",
            tp.topic,
            tp.partition,
            offset,
            due_at.isoformat(timespec="milliseconds"),
        )

    def _release_due(self) -> None:
        now = datetime.now(UTC)
        for tp, due_at in list(self._held.items()):
            if due_at <= now:
                del self._held[tp]
        metrics.HELD_PARTITIONS.set(len(self._held))

    def _sync_pauses(self, *, backpressure: bool) -> None:
        """Pause what should not be fetched now, resume the rest."""
        consumer = self._require_consumer()
        assigned = consumer.assignment()
        wanted = set(assigned) if backpressure else set(self._held) & assigned
        paused = consumer.paused()
        if to_pause := wanted - paused:
            consumer.pause(*to_pause)
        if to_resume := paused - wanted:
            consumer.resume(*to_resume)

    def _poll_timeout_ms(self) -> int:
        if not self._held:
            return POLL_TIMEOUT_MS
        until_due_s = (min(self._held.values()) - datetime.now(UTC)).total_seconds()
        return max(1, min(POLL_TIMEOUT_MS, int(until_due_s * 1000) + 1))

    async def _wait_for_slot(self) -> None:
        # Full: stop fetching at once. What was prefetched stays buffered
        # (at most one fetch per partition) and is served once slots free.
        consumer = self._require_consumer()
        self._sync_pauses(backpressure=True)
        self._refill.clear()
        refill = asyncio.ensure_future(self._refill.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {refill, stopping},
                timeout=KEEPALIVE_POLL_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            refill.cancel()
            stopping.cancel()
        if not done:
            # Full for a long while: an empty poll tells the group this
            # process is alive (it drops what was prefetched, fetched again
            # later).
            stray = await consumer.getmany(timeout_ms=0, max_records=1)
            for tp, records in stray.items():
                # Assigned by a rebalance after the pause: give it back.
                consumer.seek(tp, records[0].offset)
        await self._commit_if_due()

    async def _commit_if_due(self) -> None:
        if time.monotonic() - self._committed_at_s >= COMMIT_INTERVAL_S:
            await self._commit()

    async def _commit(self) -> None:
        consumer = self._require_consumer()
        self._committed_at_s = time.monotonic()
        self._uncommitted.update(self._tracker.take_committable())
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in self._uncommitted.items() if tp in assigned}
        if not offsets:
            return
        if not await commit_offsets(consumer, offsets):
            return
        for tp, offset in offsets.items():
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    async def _drain(self) -> None:
        grace_s = self._settings.generator_shutdown_grace_s
        if self._tasks:
            logger.info(
                "Waiting up to %.0f s for %d message(s) in flight",
                grace_s,
                len(self._tasks),
            )
            _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            if pending:
                logger.warning(
                    "%d message(s) did not finish within the grace period;"
                    " cancelling them, they will be delivered again",
                    len(pending),
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._consumer is not None:
            await self._commit()

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let work from ``revoked`` finish and commit it before another
        process takes the partitions over, so it is not done twice."""
        losing = [task for task, tp in self._tasks.items() if tp in revoked]
        if losing and not self._stopping.is_set():
            grace_s = self._settings.generator_shutdown_grace_s
            logger.info(
                "Partitions revoked: waiting up to %.0f s for %d message(s)"
                " in flight from them",
                grace_s,
                len(losing),
            )
            await asyncio.wait(losing, timeout=grace_s)
        await self._commit()
        self._tracker.forget(revoked)
        for tp in revoked:
            self._held.pop(tp, None)
            self._uncommitted.pop(tp, None)
            self._epochs[tp] += 1
        metrics.HELD_PARTITIONS.set(len(self._held))

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("Assigned %d partition(s)", len(assigned))
        self.ready.set()

    def _require_consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "run() sets the consumer up"
        return self._consumer

    def _require_worker(self) -> VariantWorker:
        assert self._worker is not None, "run() sets the worker up"
        return self._worker


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: GeneratorService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._service.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._service.partitions_assigned(set(assigned))


def _due_at(job: VariantGenerate) -> datetime | None:
    if job.due_at is None or job.due_at.tzinfo is not None:
        return job.due_at
    return job.due_at.replace(tzinfo=UTC)


async def _start_kafka(starting: Coroutine[Any, Any, None], bootstrap: str) -> None:
    try:
        await starting
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc!r}") from exc
