"""Rows the CLI tests start from: an order, its variants, its dead letters."""

from __future__ import annotations

import json
import uuid
from typing import Any

from songswipe.shared.db import Connection
from songswipe.shared.messages import (
    DeadLetter,
    GenerationRequested,
    SongBrief,
    VariantGenerate,
)
from songswipe.shared.topics import MAX_ATTEMPTS, Topics


def requested_work(order: dict[str, Any]) -> GenerationRequested:
    return GenerationRequested(
        order_id=order["id"],
        user_id=order["user_id"],
        customization_id=order["customization_id"],
        stripe_session_id=order["stripe_session_id"],
    )


def variant_work(order: dict[str, Any], variant_number: int) -> VariantGenerate:
    return VariantGenerate(
        order_id=order["id"],
        user_id=order["user_id"],
        variant_number=variant_number,
        attempt=MAX_ATTEMPTS,
        brief=SongBrief.from_customization(order["customization"]),
    )


async def insert_dead_letter(
    db: Connection,
    topics: Topics,
    *,
    order: dict[str, Any] | None = None,
    variant_number: int = 3,
    job_type: str = "variant.generate",
    payload: dict[str, Any] | None = None,
    whole: bool = False,
) -> DeadLetter:
    """A ``failed_jobs`` row as the finalizer stores a dead letter.

    The finalizer stores the work itself as ``event_data``; ``whole`` stores
    the whole dead letter instead, which the CLI reads too.
    """
    if payload is None:
        assert order is not None
        payload = variant_work(order, variant_number).model_dump(mode="json")
    letter = DeadLetter(
        order_id=order["id"] if order else uuid.uuid4(),
        job_type=job_type,
        source_topic=topics.retry(4),
        payload=payload,
        variant_number=variant_number,
        error_type="ProviderError",
        error_message="ElevenLabs returned 500",
        error_stack="Traceback ...",
        attempt_count=MAX_ATTEMPTS,
    )
    await db.execute(
        "insert into failed_jobs (id, order_id, job_type, event_data,"
        " error_message, error_stack, retry_count, source_topic, failed_at)"
        " values (%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)",
        (
            letter.message_id,
            letter.order_id,
            letter.job_type,
            letter.model_dump_json() if whole else json.dumps(letter.payload),
            letter.error_message,
            letter.error_stack,
            letter.attempt_count,
            letter.source_topic,
            letter.failed_at,
        ),
    )
    return letter
