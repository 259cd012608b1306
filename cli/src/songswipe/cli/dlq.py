"""Dead letters: what failed and why, and sending the work back.

A replay puts the original work back on its topic with fresh attempts. For a
variant that means a ``VariantGenerate`` with attempt 1 on
``variant.generate``, the variant moved from ``failed`` back to ``pending``
(the one backward move the schema allows, and only inside a transaction that
says it is a replay), and the dead letter marked replayed. The dead letter's
row is locked while this is decided, and a variant that is no longer
``failed`` is never replayed, so replaying twice does not duplicate the work.

A replay commits before it publishes, so a CLI killed in between leaves the
variant ``pending`` with nothing on its way. Once such a variant has gone
``STRANDED_AFTER`` without starting, replaying the same dead letter sends its
work again; before that, the first message may still be queued, and the
replay is refused.

A dead-lettered ``generation.requested`` goes back to its topic too; its
order, if ``failed``, is reopened to ``generating`` so the orchestrator takes
it again. Anything else (a Stripe event the webhook could not use) is not
pipeline work, and replaying is refused with what to do instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
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
from songswipe.shared.messages import (
    GenerationRequested,
    Message,
    VariantGenerate,
    utc_now,
)
from songswipe.shared.statuses import OrderStatus, VariantStatus
from songswipe.shared.topics import Topics

logger = logging.getLogger(__name__)

PRODUCER_START_TIMEOUT_S = 15.0
#: A replayed variant still not started this long after the replay is taken
#: for one whose message was never sent.
STRANDED_AFTER = timedelta(minutes=10)
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


def _work(event_data: dict[str, Any]) -> dict[str, Any]:
    """The work of a dead letter stored whole (under ``payload``) or bare."""
    payload = event_data.get("payload")
    return payload if isinstance(payload, dict) else event_data


def variant_work(event_data: dict[str, Any]) -> VariantGenerate | None:
    """The variant generation a dead letter holds, as it was sent, or ``None``."""
    try:
        return VariantGenerate.model_validate(_work(event_data))
    except ValidationError:
        return None


def requested_work(event_data: dict[str, Any]) -> GenerationRequested | None:
    """The generation request a dead letter holds, as it was sent, or ``None``."""
    try:
        return GenerationRequested.model_validate(_work(event_data))
    except ValidationError:
        return None


async def _fresh_work(conn: Connection, original: VariantGenerate) -> VariantGenerate:
    """The variant's work again: a new message, attempt 1, due at once."""
    return original.model_copy(
        update={
            "message_id": uuid.uuid4(),
            "attempt": 1,
            "due_at": None,
            "dispatch": await _next_dispatch(conn, original),
        }
    )


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


Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class _Replay:
    """What a replay sends, and the statements that undo its database changes."""

    topic: str
    message: Message
    detail: str
    undo: Sequence[Statement]
    variant_number: int | None = None


async def replay(
    conn: Connection,
    producer: AIOKafkaProducer,
    topics: Topics,
    dead_letter_id: uuid.UUID,
) -> ReplayResult:
    """Send one dead letter's work back, or say why it is not sent.

    The database changes commit before the message is published, so the
    consumer never sees the work while its row still reads ``failed``; if the
    publish then fails, the changes are undone.
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
        planned = await _plan(conn, topics, letter)
        if isinstance(planned, ReplayResult):
            return planned
        await conn.execute(
            "update failed_jobs set replayed_at = now(),"
            " replay_count = replay_count + 1 where id = %s",
            (dead_letter_id,),
        )

    try:
        await publish(producer, planned.topic, planned.message)
    except KafkaUnavailable:
        await _undo(conn, letter, planned.undo)
        raise

    logger.info(
        "Replayed dead letter id=%s order_id=%s to %s",
        dead_letter_id,
        planned.message.order_id,
        planned.topic,
    )
    return ReplayResult(
        dead_letter_id,
        replayed=True,
        detail=planned.detail,
        order_id=planned.message.order_id,
        variant_number=planned.variant_number,
    )


async def _plan(
    conn: Connection, topics: Topics, letter: dict[str, Any]
) -> _Replay | ReplayResult:
    if (work := variant_work(letter["event_data"])) is not None:
        return await _plan_variant(conn, topics, letter, work)
    if (request := requested_work(letter["event_data"])) is not None:
        return await _plan_request(conn, topics, letter, request)
    return _refused(
        letter,
        f"job_type={letter['job_type']} is not pipeline work; fix the cause, then"
        " have Stripe resend the event (or place the order again)",
    )


async def _plan_variant(
    conn: Connection, topics: Topics, letter: dict[str, Any], original: VariantGenerate
) -> _Replay | ReplayResult:
    where = f"variant {original.variant_number} of order {original.order_id}"
    cursor = await conn.execute(
        "select id, status, attempt_count, error, started_at,"
        " now() as checked_at from song_variants"
        " where order_id = %s and variant_number = %s for update",
        (original.order_id, original.variant_number),
    )
    variant = await cursor.fetchone()
    if variant is None:
        return _refused(letter, f"{where} does not exist")
    if variant["status"] == VariantStatus.PENDING and letter["replayed_at"]:
        return await _plan_stranded(conn, topics, letter, original, variant, where)
    if variant["status"] != VariantStatus.FAILED:
        return _refused(letter, f"{where} is {variant['status']}, not failed")

    await conn.execute(_REPLAY_FLAG_SQL)
    await conn.execute(
        "update song_variants set status = 'pending', attempt_count = 0,"
        " error = null, started_at = null, completed_at = null"
        " where id = %s and status = 'failed'",
        (variant["id"],),
    )
    undo: list[Statement] = [
        (
            "update song_variants set status = 'failed', attempt_count = %s,"
            " error = %s where id = %s and status = 'pending'",
            (variant["attempt_count"], variant["error"], variant["id"]),
        )
    ]
    undo += await _reopen_order(conn, original.order_id)

    work = await _fresh_work(conn, original)
    return _Replay(
        topics.generate,
        work,
        f"{where} is pending again, attempt 1 sent to {topics.generate}",
        undo,
        variant_number=original.variant_number,
    )


async def _plan_stranded(
    conn: Connection,
    topics: Topics,
    letter: dict[str, Any],
    original: VariantGenerate,
    variant: dict[str, Any],
    where: str,
) -> _Replay | ReplayResult:
    """Send again the work of an earlier replay that never started."""
    resend_from = letter["replayed_at"] + STRANDED_AFTER
    if variant["started_at"] is not None or variant["attempt_count"] > 0:
        return _refused(letter, f"{where} is pending again, its replay under way")
    if variant["checked_at"] < resend_from:
        return _refused(
            letter,
            f"{where} is pending, its replay not started yet; if it has not"
            f" started by {resend_from.isoformat(timespec='seconds')}, replay it"
            " again to send the work once more",
        )

    work = await _fresh_work(conn, original)
    return _Replay(
        topics.generate,
        work,
        f"{where} never started after its replay; attempt 1 sent to"
        f" {topics.generate} again",
        [],
        variant_number=original.variant_number,
    )


async def _plan_request(
    conn: Connection,
    topics: Topics,
    letter: dict[str, Any],
    original: GenerationRequested,
) -> _Replay | ReplayResult:
    where = f"order {original.order_id}"
    cursor = await conn.execute(
        "select status from orders where id = %s for update", (original.order_id,)
    )
    order = await cursor.fetchone()
    if order is None:
        return _refused(letter, f"{where} does not exist")
    if order["status"] == OrderStatus.COMPLETED:
        return _refused(letter, f"{where} is completed; nothing to generate")
    if letter["replayed_at"] is not None and order["status"] != OrderStatus.FAILED:
        return _refused(letter, f"{where} is {order['status']}")

    undo = await _reopen_order(conn, original.order_id)
    request = original.model_copy(
        update={"message_id": uuid.uuid4(), "requested_at": utc_now()}
    )
    return _Replay(
        topics.requested,
        request,
        f"{where} is generating, its request sent to {topics.requested} again",
        undo,
    )


async def _reopen_order(conn: Connection, order_id: uuid.UUID) -> list[Statement]:
    """Move a ``failed`` order back to ``generating``; the statement undoing it."""
    cursor = await conn.execute(
        "select error from orders where id = %s and status = 'failed'", (order_id,)
    )
    failed = await cursor.fetchone()
    if failed is None:
        return []
    await conn.execute(_REPLAY_FLAG_SQL)
    await conn.execute(
        "update orders set status = 'generating', completed_at = null, error = null"
        " where id = %s and status = 'failed'",
        (order_id,),
    )
    return [
        (
            "update orders set status = 'failed', error = %s"
            " where id = %s and status = 'generating'",
            (failed["error"], order_id),
        )
    ]


def _refused(letter: dict[str, Any], reason: str) -> ReplayResult:
    """A replay refused, saying why and whether it was replayed before."""
    detail = reason
    if letter["replayed_at"] is not None:
        detail += (
            "; this dead letter was already replayed at"
            f" {letter['replayed_at'].isoformat(timespec='seconds')}"
        )
    return ReplayResult(
        letter["id"], replayed=False, detail=detail, order_id=letter["order_id"]
    )


async def _undo(
    conn: Connection, letter: dict[str, Any], statements: Sequence[Statement]
) -> None:
    """Put back what a replay changed, after its message could not be sent."""
    async with conn.transaction():
        for query, params in statements:
            await conn.execute(query, params)
        await conn.execute(
            "update failed_jobs set replayed_at = %s,"
            " replay_count = greatest(replay_count - 1, 0) where id = %s",
            (letter["replayed_at"], letter["id"]),
        )
    logger.warning(
        "Replay of dead letter id=%s undone: Kafka did not take the work",
        letter["id"],
    )
