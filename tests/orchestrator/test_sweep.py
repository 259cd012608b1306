"""The sweep: stuck variants are dispatched again, then failed and dead-lettered.

The sweep is called with a clock of the test's choosing, so hours of
timeouts take no time; ``test_process`` shows the timer doing it for real.
"""

from __future__ import annotations

import time

from songswipe.orchestrator.app import GENERATION_TIMEOUT, Orchestrator
from songswipe.shared.db import Connection
from songswipe.shared.messages import DeadLetter, GenerationSettled, VariantGenerate
from songswipe.shared.topics import Topics
from tests.orchestrator.helpers import completion, request_for
from tests.orchestrator.test_agents import complete, fan_out, paid_order
from tests.support import consume

ALL_PARTITIONS = {0, 1, 2}
DAY_S = 24 * 60 * 60


async def test_sweep_dispatches_again_then_fails_dead_letters_and_settles(
    db: Connection, topics: Topics, orchestrator: Orchestrator, kafka_bootstrap: str
) -> None:
    timeout_s = orchestrator.settings.orchestrator_generation_timeout_s
    assert orchestrator.settings.orchestrator_max_dispatches == 2
    order = await paid_order(db)
    order_id = order["id"]
    start_s = time.time()
    await fan_out(orchestrator, request_for(order))
    await complete(orchestrator, completion(order_id, 2))
    # Variant 1 finished in the database, but its completion never arrived.
    await db.execute(
        "update song_variants set status = 'complete', storage_path = 'p.mp3'"
        " where order_id = %s and variant_number = 1",
        (order_id,),
    )

    await orchestrator.sweep(start_s + timeout_s / 2, ALL_PARTITIONS)
    assert (
        len(await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=3))
        == 3
    )

    await orchestrator.sweep(start_s + timeout_s + 1, ALL_PARTITIONS)
    generates = await consume(
        kafka_bootstrap, topics.generate, VariantGenerate, expect=5
    )
    again = [(m.variant_number, m.dispatch, m.attempt) for m in generates[3:]]
    assert sorted(again) == [(1, 2, 1), (3, 2, 1)]

    # Orders of partitions another worker owns are left alone.
    await orchestrator.sweep(start_s + 3 * timeout_s, ALL_PARTITIONS - {0})
    assert await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=0) == []

    await orchestrator.sweep(start_s + 3 * timeout_s, ALL_PARTITIONS)
    await orchestrator.sweep(start_s + 4 * timeout_s, ALL_PARTITIONS)

    letters = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=1)
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.order_id, letter.variant_number) == (order_id, 3)
    assert (letter.job_type, letter.source_topic) == (
        "variant.generate",
        topics.generate,
    )
    assert (letter.error_type, letter.attempt_count) == (GENERATION_TIMEOUT, 2)
    work = VariantGenerate.model_validate(letter.payload)
    assert (work.variant_number, work.dispatch, work.attempt) == (3, 2, 1)

    cursor = await db.execute(
        "select variant_number, status, error from song_variants where order_id = %s"
        " order by variant_number",
        (order_id,),
    )
    rows = await cursor.fetchall()
    assert [row["status"] for row in rows] == ["complete", "pending", "failed"]
    assert "no completion after 2 dispatches" in rows[2]["error"]

    settled = await consume(
        kafka_bootstrap, topics.settled, GenerationSettled, expect=1
    )
    assert [(s.complete_count, s.failed_count) for s in settled] == [(2, 1)]
    assert (
        len(await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=5))
        == 5
    )

    key = str(order_id).encode()
    await orchestrator.sweep(start_s + 6 * DAY_S, ALL_PARTITIONS)
    assert key in orchestrator.table
    await orchestrator.sweep(start_s + 8 * DAY_S, ALL_PARTITIONS)
    assert key not in orchestrator.table
