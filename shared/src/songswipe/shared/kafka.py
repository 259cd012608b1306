"""Kafka helpers on aiokafka: producer, topic creation, finished-only commits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from songswipe.shared.errors import KafkaUnavailable
from songswipe.shared.messages import Message
from songswipe.shared.topics import TopicSpec

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_MS = 10_000


#: How often a busy consumer commits what it finished. Each commit is a
#: write to the broker's offsets log; once a second instead of after every
#: fetch saves the broker most of them. A crash repeats at most this much
#: finished work, which every consumer here handles idempotently.
COMMIT_INTERVAL_S = 1.0
#: aiokafka retries a commit for as long as the broker answers with a
#: retriable error (a deleted topic, a coordinator that moved), so every commit
#: here is bounded: one that times out is made again with the next.
COMMIT_TIMEOUT_S = 10.0
#: A fetch's wait for data when less than ``FETCH_MIN_BYTES`` is there.
FETCH_MAX_WAIT_MS = 5
FETCH_MIN_BYTES = 16_384


def make_producer(
    bootstrap_servers: str,
    *,
    client_id: str,
    linger_ms: int = 0,
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
) -> AIOKafkaProducer:
    """An idempotent producer: ``acks=all``, no duplicates from its own retries."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=request_timeout_ms,
    )


def make_consumer(
    bootstrap_servers: str,
    *topics: str,
    group_id: str,
    client_id: str,
    max_poll_records: int = 100,
    fetch_min_bytes: int = FETCH_MIN_BYTES,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    """A consumer that never commits on its own: callers commit finished work.

    Under load, a fetch waits up to ``fetch_max_wait_ms`` for
    ``fetch_min_bytes``: one fetch then brings many messages where it would
    bring one or two, which costs the broker and this process far fewer
    requests; when idle, a message waits at most that long.
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        fetch_min_bytes=fetch_min_bytes,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    message: Message,
    *,
    timeout_s: float = 10.0,
) -> None:
    """Send ``message`` keyed by its order id and wait for the broker's ack."""
    try:
        # A timeout scope, not wait_for: no extra task for every message.
        async with asyncio.timeout(timeout_s):
            await producer.send_and_wait(topic, message.to_bytes(), key=message.key)
    except (KafkaError, TimeoutError) as exc:
        raise KafkaUnavailable(
            f"{topic} did not acknowledge the message: {exc!r}",
            order_id=message.order_id,
        ) from exc


async def commit_offsets(
    consumer: AIOKafkaConsumer,
    offsets: dict[TopicPartition, int],
    *,
    timeout_s: float = COMMIT_TIMEOUT_S,
) -> bool:
    """Commit ``offsets`` within ``timeout_s``; say whether the broker took them.

    A failed commit loses nothing: the messages are delivered again, and every
    consumer here handles a repeat idempotently.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.commit(offsets)
    except (KafkaError, TimeoutError) as exc:
        logger.warning(
            "Committing offsets failed (%r); trying again with the next commit", exc
        )
        return False
    return True


async def ensure_topics(bootstrap_servers: str, specs: Iterable[TopicSpec]) -> None:
    """Create each topic that does not exist yet, with its partitions and config.

    Every topic is created explicitly: a topic auto-created with another
    partition count would break the co-partitioning the tables rely on.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="songswipe-admin"
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap_servers}") from exc

    try:
        await _create_missing(admin, list(specs))
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"cannot create topics at {bootstrap_servers}: {exc!r}"
        ) from exc
    finally:
        await admin.close()


async def _create_missing(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    existing = set(await admin.list_topics())
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return

    new_topics = [
        NewTopic(
            name=spec.name,
            num_partitions=spec.partitions,
            replication_factor=1,
            topic_configs=spec.config,
        )
        for spec in missing
    ]
    try:
        await admin.create_topics(new_topics)
    except TopicAlreadyExistsError:
        logger.info("Topics created concurrently by another process, reusing them")
    await _wait_for_leaders(admin, missing)
    logger.info("Created topics %s", ",".join(spec.name for spec in missing))


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], timeout_s: float = 15.0
) -> None:
    """Wait until every partition of ``specs`` has a leader.

    The controller answers a creation before the broker serves the new
    partitions; a client that starts right away would see unknown topics.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    wanted = {spec.name: spec.partitions for spec in specs}
    while True:
        described = await admin.describe_topics(list(wanted))
        led = {
            topic["topic"]: sum(1 for p in topic["partitions"] if p["leader"] >= 0)
            for topic in described
            if topic["error_code"] == 0
        }
        if all(led.get(name) == count for name, count in wanted.items()):
            return
        if loop.time() > deadline:
            raise KafkaUnavailable(f"topics have no leaders after {timeout_s} s")
        await asyncio.sleep(0.1)


@dataclass
class _PartitionProgress:
    in_flight: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    committable: int | None = None


class OffsetTracker:
    """Track work that finishes out of order and say what is safe to commit.

    The committable offset of a partition is one past the highest offset below
    which every tracked message has finished, so a crash only ever replays
    unfinished work.
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _PartitionProgress] = {}

    def start(self, tp: TopicPartition, offset: int) -> None:
        self._partitions.setdefault(tp, _PartitionProgress()).in_flight.add(offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        progress = self._partitions.setdefault(tp, _PartitionProgress())
        progress.in_flight.discard(offset)
        progress.finished.add(offset)

        lowest_open = min(progress.in_flight, default=None)
        done = [o for o in progress.finished if lowest_open is None or o < lowest_open]
        if done:
            progress.committable = max(done) + 1
            progress.finished.difference_update(done)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop partitions this process no longer owns (after a rebalance)."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def take_committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now; each is returned once."""
        ready: dict[TopicPartition, int] = {}
        for tp, progress in self._partitions.items():
            if progress.committable is not None:
                ready[tp] = progress.committable
                progress.committable = None
        return ready

    @property
    def in_flight(self) -> int:
        return sum(len(p.in_flight) for p in self._partitions.values())
