"""Messages, a producer and an orchestrator process for the orchestrator's tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from songswipe.shared.kafka import make_producer, publish
from songswipe.shared.messages import GenerationRequested, Message, VariantCompleted
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import Topics

READY_LINE = "Order table recovered"
START_TIMEOUT_S = 45.0


def request_for(order: dict[str, Any], **overrides: Any) -> GenerationRequested:
    """The request the webhook publishes for ``order``."""
    values: dict[str, Any] = {
        "order_id": order["id"],
        "user_id": order["user_id"],
        "customization_id": order["customization_id"],
        "stripe_session_id": order["stripe_session_id"],
    }
    return GenerationRequested(**(values | overrides))


def completion(
    order_id: uuid.UUID, variant: int, status: VariantStatus = VariantStatus.COMPLETE
) -> VariantCompleted:
    """What the generator publishes when a variant is done."""
    complete = status is VariantStatus.COMPLETE
    return VariantCompleted(
        order_id=order_id,
        variant_number=variant,
        status=status,
        attempt=1,
        storage_path=f"u/{order_id}/variant-{variant}.mp3" if complete else None,
        error=None if complete else "provider refused the prompt",
    )


async def send(bootstrap: str, topic: str, *messages: Message) -> None:
    producer = make_producer(bootstrap, client_id="orchestrator-tests")
    await producer.start()
    try:
        for message in messages:
            await publish(producer, topic, message)
    finally:
        await producer.stop()


async def changelog_keys(
    bootstrap: str, topics: Topics, *, partitions: int = 3
) -> set[bytes]:
    """Every key the order table's changelog holds right now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topics.order_state_changelog, p) for p in range(partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        keys: set[bytes] = set()
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            batches = await consumer.getmany(timeout_ms=200)
            keys.update(r.key for records in batches.values() for r in records)
        return keys
    finally:
        await consumer.stop()


class OrchestratorProcess:
    """``python -m songswipe.orchestrator`` with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "songswipe.orchestrator"],
                env={**os.environ, **self.env},
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        """What this start of the process logged so far."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    async def wait_for_log(
        self, text: str, *, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"orchestrator exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.log()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, *, timeout_s: float = 20.0) -> int:
        """SIGTERM; the exit code (SIGKILL after ``timeout_s``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def partition_for(key: bytes, partitions: int = 3) -> int:
    """The partition the producers' default partitioner gives ``key``."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


async def committed_offset(
    bootstrap: str, group_id: str, topic: str, partition: int
) -> int:
    """The group's committed offset of one partition; -1 before any commit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tp = TopicPartition(topic, partition)
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
    finally:
        await admin.close()
    found = offsets.get(tp)
    return -1 if found is None else int(found.offset)
