"""Helpers the tests of every service share: rows, messages, signatures."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer

from songswipe.shared.db import Connection
from songswipe.shared.messages import Message
from songswipe.shared.topics import MAX_ATTEMPTS

M = TypeVar("M", bound=Message)


async def insert_customization(
    db: Connection, *, user_id: uuid.UUID | None = None, **overrides: Any
) -> dict[str, Any]:
    """A valid ``customizations`` row; keyword arguments override columns."""
    row: dict[str, Any] = {
        "user_id": user_id or uuid.uuid4(),
        "recipient_name": "Maya",
        "sender_name": "Sam",
        "occasion": "birthday",
        "mood": "joyful",
        "genre": "pop",
        "song_length_seconds": 30,
        "memories": "the road trip to the coast",
        "things_to_avoid": "sad endings",
    }
    row.update(overrides)
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    cursor = await db.execute(
        f"insert into customizations ({columns}) values ({placeholders}) returning *",
        tuple(row.values()),
    )
    created = await cursor.fetchone()
    assert created is not None
    return created


async def insert_order(
    db: Connection,
    customization: dict[str, Any],
    *,
    status: str = "paid",
    session_id: str | None = None,
) -> dict[str, Any]:
    cursor = await db.execute(
        "insert into orders (user_id, customization_id, stripe_session_id, status,"
        " amount_total, currency) values (%s, %s, %s, %s, 1999, 'usd') returning *",
        (
            customization["user_id"],
            customization["id"],
            session_id or f"cs_test_{uuid.uuid4().hex}",
            status,
        ),
    )
    created = await cursor.fetchone()
    assert created is not None
    return created


async def order_with_outcomes(
    db: Connection, *, order_status: str, variant_statuses: tuple[str, str, str]
) -> dict[str, Any]:
    """An order whose three variants have the given statuses, with the
    customization under ``"customization"``."""
    customization = await insert_customization(db)
    order = await insert_order(db, customization, status=order_status)
    for number, status in enumerate(variant_statuses, start=1):
        path = (
            f"{order['user_id']}/{order['id']}/variant-{number}.mp3"
            if status == "complete"
            else None
        )
        error = "ElevenLabs returned 500 five times" if status == "failed" else None
        attempts = MAX_ATTEMPTS if status == "failed" else 1
        await db.execute(
            "insert into song_variants (order_id, variant_number, status,"
            " attempt_count, storage_path, error) values (%s, %s, %s, %s, %s, %s)",
            (order["id"], number, status, attempts, path, error),
        )
    order["customization"] = customization
    return order


async def consume(
    bootstrap: str,
    topic: str,
    model: type[M],
    *,
    expect: int,
    timeout_s: float = 20.0,
    settle_s: float = 1.0,
) -> list[M]:
    """Read ``topic`` from the start until ``expect`` messages, then a bit more.

    Waiting ``settle_s`` after the expected count lets an unwanted extra
    message show up, so an assertion on the count can fail.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    found: list[M] = []
    try:
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(model.from_bytes(r.value) for r in records)
            if len(found) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle_s
    finally:
        await consumer.stop()
    return found


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it is true, or fail saying what never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")
