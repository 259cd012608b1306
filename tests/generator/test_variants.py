"""The generator's row updates, batched: many variants at once, each its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from songswipe.generator.variants import Variants
from songswipe.shared.db import Connection, Pool, connect, open_pool
from songswipe.shared.statuses import VariantStatus
from tests.generator.helpers import order_with_variants, variant_row


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    opened = await open_pool(database_url, min_size=2, max_size=2)
    yield opened
    await opened.close()


async def test_concurrent_starts_and_completions_each_move_their_own_row(
    db: Connection, pool: Pool
) -> None:
    orders = [(await order_with_variants(db, variants=(1, 2, 3)))[1] for _ in range(10)]
    keys = [(order["id"], n) for order in orders for n in (1, 2, 3)]
    statements: list[str] = []
    variants = Variants(pool, batch_max_size=8)
    original = variants._many

    async def counted(query, batch):  # type: ignore[no-untyped-def]
        statements.append(query)
        return await original(query, batch)

    variants._many = counted  # type: ignore[method-assign]

    started = await asyncio.gather(
        *(variants.start_attempt(order_id, n, attempt=2) for order_id, n in keys)
    )
    completed = await asyncio.gather(
        *(
            variants.complete(order_id, n, f"u/{order_id}/variant-{n}.mp3")
            for order_id, n in keys
        )
    )

    assert [v.status if v else None for v in started] == [VariantStatus.GENERATING] * 30
    assert {v.attempt_count for v in started if v} == {2}
    assert [v.storage_path if v else None for v in completed] == [
        f"u/{order_id}/variant-{n}.mp3" for order_id, n in keys
    ]
    # 30 rows in batches of at most 8: four statements each way, not thirty.
    assert len(statements) <= 8
    for order_id, n in keys:
        row = await variant_row(db, order_id, n)
        assert row["status"] == "complete"
        assert row["storage_path"] == f"u/{order_id}/variant-{n}.mp3"


async def test_a_batch_leaves_finished_and_later_attempts_alone(
    db: Connection, pool: Pool
) -> None:
    _, done = await order_with_variants(db, variants=(1,))
    await db.execute(
        "update song_variants set status = 'complete', storage_path = 'x.mp3',"
        " completed_at = now() where order_id = %s",
        (done["id"],),
    )
    _, running = await order_with_variants(db, variants=(1,), status="generating")
    await db.execute(
        "update song_variants set attempt_count = 3 where order_id = %s",
        (running["id"],),
    )
    _, fresh = await order_with_variants(db, variants=(1,))
    variants = Variants(pool)

    outcomes = await asyncio.gather(
        variants.start_attempt(done["id"], 1, attempt=1),
        variants.start_attempt(running["id"], 1, attempt=2),
        variants.start_attempt(fresh["id"], 1, attempt=1),
    )

    assert outcomes[0] is None
    assert outcomes[1] is None
    assert outcomes[2] is not None
    assert outcomes[2].status is VariantStatus.GENERATING
    assert (await variant_row(db, running["id"], 1))["attempt_count"] == 3
    assert (await variant_row(db, done["id"], 1))["status"] == "complete"


async def test_a_row_locked_elsewhere_waits_alone_not_with_its_batch(
    db: Connection, pool: Pool, database_url: str
) -> None:
    _, slow = await order_with_variants(db, variants=(1,))
    _, fast = await order_with_variants(db, variants=(1, 2, 3))
    variants = Variants(pool)
    blocker = await connect(database_url)
    try:
        await blocker.set_autocommit(False)
        await blocker.execute(
            "select 1 from song_variants where order_id = %s for update",
            (slow["id"],),
        )
        held = asyncio.ensure_future(variants.start_attempt(slow["id"], 1, 1))
        others = await asyncio.wait_for(
            asyncio.gather(
                *(variants.start_attempt(fast["id"], n, 1) for n in (1, 2, 3))
            ),
            timeout=5,
        )
        await asyncio.sleep(0.2)
        assert not held.done()
        await blocker.rollback()
        started = await asyncio.wait_for(held, timeout=5)
    finally:
        await blocker.close()

    assert [v.status if v else None for v in others] == [VariantStatus.GENERATING] * 3
    assert started is not None
    assert started.status is VariantStatus.GENERATING
