"""A signed-in customer reads only their own customizations, orders, variants."""

from __future__ import annotations

import json
import uuid

from songswipe.shared.db import Connection
from tests.support import insert_customization, insert_order


async def rows_visible_to(db: Connection, user_id: uuid.UUID, table: str) -> int:
    claims = json.dumps({"sub": str(user_id), "role": "authenticated"})
    async with db.transaction():
        await db.execute("set local role authenticated")
        await db.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        cursor = await db.execute(f"select count(*) as n from {table}")
        row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def test_customer_sees_only_their_own_rows(db: Connection) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alice_order = await insert_order(db, await insert_customization(db, user_id=alice))
    await insert_order(db, await insert_customization(db, user_id=bob))
    await db.execute(
        "insert into song_variants (order_id, variant_number) values (%s, 1)",
        (alice_order["id"],),
    )
    await db.execute("grant authenticated to current_user")

    assert await rows_visible_to(db, alice, "orders") == 1
    assert await rows_visible_to(db, alice, "customizations") == 1
    assert await rows_visible_to(db, alice, "song_variants") == 1
    assert await rows_visible_to(db, bob, "orders") == 1
    assert await rows_visible_to(db, bob, "song_variants") == 0
    assert await rows_visible_to(db, uuid.uuid4(), "orders") == 0


async def test_customer_cannot_read_operational_tables(db: Connection) -> None:
    await db.execute("grant authenticated to current_user")
    alice = uuid.uuid4()

    async with db.transaction():
        await db.execute("set local role authenticated")
        cursor = await db.execute(
            "select has_table_privilege('failed_jobs', 'select') as jobs,"
            " has_table_privilege('stripe_events', 'select') as events"
        )
        privileges = await cursor.fetchone()

    assert privileges == {"jobs": False, "events": False}
    assert await rows_visible_to(db, alice, "orders") == 0
