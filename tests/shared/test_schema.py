"""The schema's constraints make bad states impossible."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from songswipe.shared.db import Connection
from tests.support import insert_customization, insert_order


async def insert_variant(
    db: Connection, order: dict[str, Any], number: int, status: str = "pending"
) -> None:
    await db.execute(
        "insert into song_variants (order_id, variant_number, status, storage_path)"
        " values (%s, %s, %s, %s)",
        (order["id"], number, status, "p.mp3" if status == "complete" else None),
    )


async def test_bad_status_is_rejected(db: Connection) -> None:
    customization = await insert_customization(db)

    with pytest.raises(psycopg.errors.CheckViolation):
        await insert_order(db, customization, status="shipped")


async def test_fourth_variant_is_rejected(db: Connection) -> None:
    order = await insert_order(db, await insert_customization(db))
    for number in (1, 2, 3):
        await insert_variant(db, order, number)

    with pytest.raises(psycopg.errors.CheckViolation):
        await insert_variant(db, order, 4)


async def test_duplicate_variant_number_is_rejected(db: Connection) -> None:
    order = await insert_order(db, await insert_customization(db))
    await insert_variant(db, order, 2)

    with pytest.raises(psycopg.errors.UniqueViolation):
        await insert_variant(db, order, 2)


async def test_duplicate_stripe_session_is_rejected(db: Connection) -> None:
    customization = await insert_customization(db)
    await insert_order(db, customization, session_id="cs_test_dup")

    with pytest.raises(psycopg.errors.UniqueViolation):
        await insert_order(db, customization, session_id="cs_test_dup")


async def test_share_token_defaults_to_a_random_uuid(db: Connection) -> None:
    order = await insert_order(db, await insert_customization(db))
    await insert_variant(db, order, 1)
    await insert_variant(db, order, 2)

    cursor = await db.execute("select share_token from song_variants")
    tokens = [row["share_token"] for row in await cursor.fetchall()]

    assert all(isinstance(token, uuid.UUID) for token in tokens)
    assert len(set(tokens)) == 2


async def test_statuses_never_move_backwards(db: Connection) -> None:
    order = await insert_order(db, await insert_customization(db), status="completed")
    await insert_variant(db, order, 1, status="complete")

    with pytest.raises(psycopg.errors.CheckViolation, match="cannot move"):
        await db.execute(
            "update orders set status = 'generating' where id = %s", (order["id"],)
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot move"):
        await db.execute(
            "update song_variants set status = 'generating' where order_id = %s",
            (order["id"],),
        )


async def test_forward_moves_are_allowed(db: Connection) -> None:
    order = await insert_order(db, await insert_customization(db))
    await insert_variant(db, order, 1)

    for status in ("generating", "complete"):
        await db.execute(
            "update song_variants set status = %s, storage_path = 'a.mp3'"
            " where order_id = %s",
            (status, order["id"]),
        )
    await db.execute(
        "update orders set status = 'generating' where id = %s", (order["id"],)
    )

    cursor = await db.execute("select status from song_variants")
    assert await cursor.fetchone() == {"status": "complete"}


async def test_only_a_replay_reopens_a_failed_variant(db: Connection) -> None:
    order = await insert_order(db, await insert_customization(db))
    await insert_variant(db, order, 3, status="failed")
    reopen = "update song_variants set status = 'pending' where order_id = %s"

    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute(reopen, (order["id"],))

    async with db.transaction():
        await db.execute("select set_config('songswipe.replay', 'on', true)")
        await db.execute(reopen, (order["id"],))

    cursor = await db.execute("select status from song_variants")
    assert await cursor.fetchone() == {"status": "pending"}
