"""Dead letters: what failed and why, and sending the work back.

A replay puts the original work back on its topic with fresh attempts. For a
variant that means a ``VariantGenerate`` with attempt 1 on
``variant.generate``, the variant moved from ``failed`` back to ``pending``
(the one backward move the schema allows, and only inside a transaction that
says it is a replay), and the dead letter marked replayed. The dead letter's
row is locked while this is decided, and a variant that is no longer
``failed`` is never replayed, so replaying twice does not duplicate the work.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from songswipe.cli.errors import CliError, ExitCode
from songswipe.cli.orders import DeadLetterView
from songswipe.cli.settings import CliSettings
from songswipe.shared.db import Connection
from songswipe.shared.errors import KafkaUnavailable
from songswipe.shared.kafka import ensure_topics, make_producer, publish
from songswipe.shared.messages import VariantGenerate
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import Topics

logger = logging.getLogger(__name__)

PRODUCER_START_TIMEOUT_S = 15.0
_REPLAY_FLAG_SQL = "select set_config('songswipe.replay', 'on', true)"


@dataclass(frozen=True)
class ReplayResult:
    dead_letter_id: uuid.UUID
    replayed: bool
    detail: str
    order_id: uuid.UUID | None = None
    variant_number: int | None = None


async def list_dead_letters(
    conn: Connection, *, not_replayed: bool = False, limit: int = 50
) -> list[DeadLetterView]:
    """The newest dead letters first."""
    cursor = await conn.execute(
        "select * from failed_jobs"
        " where (not %(not_replayed)s or replayed_at is null)"
        " order by failed_at desc limit %(limit)s",
        {"not_replayed": not_replayed, "limit": limit},
    )
    return [DeadLetterView.from_row(row) for row in await cursor.fetchall()]


async def dead_letters_to_replay(conn: Connection) -> list[uuid.UUID]:
    """Every dead letter not replayed yet, oldest first."""
    cursor = await conn.execute(
        "select id from failed_jobs where replayed_at is null order by failed_at"
    )
    return [row["id"] for row in await cursor.fetchall()]


def variant_work(event_data: dict[str, Any]) -> VariantGenerate | None:
    """The variant generation a dead letter holds, as it was sent.

    ``event_data`` is either the dead letter with the work under ``payload``
    or the work itself. ``None`` when it is not a variant generation.
    """
    payload = event_data.get("payload")
    work = payload if isinstance(payload, dict) else event_data
    try:
        return VariantGenerate.model_validate(work)
    except ValidationError:
        return None


async def _next_dispatch(conn: Connection, original: VariantGenerate) -> int:
    """One more than any dispatch of this variant that was dead-lettered.

    The generator derives dead-letter ids from the dispatch and attempt, so a
    replay that fails again gets a dead letter of its own.
    """
    cursor = await conn.execute(
        "select event_data from failed_jobs where order_id = %s", (original.order_id,)
    )
    dispatches = [original.dispatch]
    for row in await cursor.fetchall():
        work = variant_work(row["event_data"])
        if work is not None and work.variant_number == original.variant_number:
            dispatches.append(work.dispatch)
    return max(dispatches) + 1


@asynccontextmanager
async def replay_producer(settings: CliSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer, with every topic present; ``KafkaUnavailable`` if not."""
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.topics.specs(settings.kafka_partitions),
    )
    producer = make_producer(
        settings.kafka_bootstrap_servers, client_id="songswipe-cli"
    )
    try:
        await asyncio.wait_for(producer.start(), timeout=PRODUCER_START_TIMEOUT_S)
    except (KafkaError, TimeoutError, OSError) as exc:
        await producer.stop()
        raise KafkaUnavailable(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc!r}"
        ) from exc
    try:
        yield producer
    finally:
        await producer.stop()


async def replay(
    conn: Connection,
    producer: AIOKafkaProducer,
    topics: Topics,
    dead_letter_id: uuid.UUID,
) -> ReplayResult:
    """Send one dead letter's work back, or say why it is not sent.

    The database changes commit before the message is published, so the
    generator never sees the work while the variant still reads ``failed``;
    if the publish then fails, the changes are undone.
    """
    async with conn.transaction():
        cursor = await conn.execute(
            "select * from failed_jobs where id = %s for update", (dead_letter_id,)
        )
        letter = await cursor.fetchone()
        if letter is None:
            raise CliError(
                f"No dead letter with id {dead_letter_id}",
                code=ExitCode.NOT_FOUND,
                hint="`songswipe dlq list` shows the dead letters.",
            )
        original = variant_work(letter["event_data"])
        if original is None:
            return ReplayResult(
                dead_letter_id,
                replayed=False,
                detail=f"job_type={letter['job_type']} is not a variant generation;"
                " replaying it cannot help: fix the cause, then place the order again",
                order_id=letter["order_id"],
            )

        cursor = await conn.execute(
            "select id, status, attempt_count, error from song_variants"
            " where order_id = %s and variant_number = %s for update",
            (original.order_id, original.variant_number),
        )
        variant = await cursor.fetchone()
        if variant is None:
            return _refused(letter, original, "does not exist")
        if variant["status"] != VariantStatus.FAILED:
            return _refused(letter, original, f"is {variant['status']}, not failed")

        work = original.model_copy(
            update={
                "message_id": uuid.uuid4(),
                "attempt": 1,
                "due_at": None,
                "dispatch": await _next_dispatch(conn, original),
            }
        )

        await conn.execute(_REPLAY_FLAG_SQL)
        await conn.execute(
            "update song_variants set status = 'pending', attempt_count = 0,"
            " error = null, started_at = null, completed_at = null"
            " where id = %s and status = 'failed'",
            (variant["id"],),
        )
        cursor = await conn.execute(
            "update orders set status = 'generating', completed_at = null"
            " where id = %s and status = 'failed' returning id",
            (work.order_id,),
        )
        reopened_order = await cursor.fetchone() is not None
        await conn.execute(
            "update failed_jobs set replayed_at = now(),"
            " replay_count = replay_count + 1 where id = %s",
            (dead_letter_id,),
        )

    try:
        await publish(producer, topics.generate, work)
    except KafkaUnavailable:
        await _undo(conn, letter, variant, reopened_order=reopened_order)
        raise

    logger.info(
        "Replayed dead letter id=%s order_id=%s variant=%d",
        dead_letter_id,
        work.order_id,
        work.variant_number,
    )
    return ReplayResult(
        dead_letter_id,
        replayed=True,
        detail=f"variant {work.variant_number} is pending again, attempt 1 sent"
        f" to {topics.generate}",
        order_id=work.order_id,
        variant_number=work.variant_number,
    )


def _refused(
    letter: dict[str, Any], work: VariantGenerate, reason: str
) -> ReplayResult:
    """A replay refused because the variant must not be generated again."""
    detail = f"variant {work.variant_number} of order {work.order_id} {reason}"
    if letter["replayed_at"] is not None:
        detail += (
            "; this dead letter was already replayed at"
            f" {letter['replayed_at'].isoformat(timespec='seconds')}"
        )
    return ReplayResult(
        letter["id"],
        replayed=False,
        detail=detail,
        order_id=work.order_id,
        variant_number=work.variant_number,
    )


async def _undo(
    conn: Connection,
    letter: dict[str, Any],
    variant: dict[str, Any],
    *,
    reopened_order: bool,
) -> None:
    """Put back what a replay changed, after its message could not be sent."""
    async with conn.transaction():
        await conn.execute(
            "update song_variants set status = 'failed', attempt_count = %s,"
            " error = %s where id = %s and status = 'pending'",
            (variant["attempt_count"], variant["error"], variant["id"]),
        )
        if reopened_order:
            await conn.execute(
                "update orders set status = 'failed'"
                " where id = %s and status = 'generating'",
                (letter["order_id"],),
            )
        await conn.execute(
            "update failed_jobs set replayed_at = %s,"
            " replay_count = greatest(replay_count - 1, 0) where id = %s",
            (letter["replayed_at"], letter["id"]),
        )
    logger.warning(
        "Replay of dead letter id=%s undone: Kafka did not take the work",
        letter["id"],
    )
