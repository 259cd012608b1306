"""The orchestrator as its own process: a crash between fan-out and settlement,
and the generation timeout driven by the real timer.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from songswipe.shared.db import Connection
from songswipe.shared.messages import GenerationSettled, VariantGenerate
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import Topics
from tests.finalizer.helpers import finalizer_settings, running_finalizer
from tests.orchestrator.helpers import (
    READY_LINE,
    OrchestratorProcess,
    changelog_keys,
    completion,
    request_for,
    send,
)
from tests.orchestrator.test_agents import order_status, paid_order
from tests.support import consume, eventually

#: The broker's smallest session timeout: how long a killed worker holds its
#: partitions before the group gives them to the next one.
SESSION_TIMEOUT_S = 6


def process_env(
    *, kafka_bootstrap: str, database_url: str, topics: Topics, workdir: Path
) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_PARTITIONS": "3",
        "DATABASE_URL": database_url,
        "DATABASE_POOL_MAX_SIZE": "2",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
        "ORCHESTRATOR_DATA_DIR": str(workdir / "faust"),
        "ORCHESTRATOR_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
    }


async def test_sigkill_between_fan_out_and_settlement_settles_once(
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    order = await paid_order(db)
    order_id: uuid.UUID = order["id"]
    request = request_for(order)
    env = process_env(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        workdir=tmp_path,
    )
    orchestrator = OrchestratorProcess(env, tmp_path / "orchestrator.log")
    finalizer = finalizer_settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    orchestrator.start()
    try:
        await orchestrator.wait_for_log(READY_LINE)
        await send(kafka_bootstrap, topics.requested, request)
        generates = await consume(
            kafka_bootstrap, topics.generate, VariantGenerate, expect=3
        )
        assert sorted(m.variant_number for m in generates) == [1, 2, 3]

        async def in_changelog() -> bool:
            return str(order_id).encode() in await changelog_keys(
                kafka_bootstrap, topics
            )

        await eventually(in_changelog, what="the order in the table's changelog")
        orchestrator.kill()

        orchestrator.start()
        await orchestrator.wait_for_log(READY_LINE)
        assert re.search(
            r"Order table recovered from \S+: 1 orders", orchestrator.log()
        )
        await send(kafka_bootstrap, topics.requested, request)
        await send(
            kafka_bootstrap,
            topics.completed,
            *(completion(order_id, n) for n in (1, 2, 3)),
        )
        async with running_finalizer(finalizer):
            settled = await consume(
                kafka_bootstrap, topics.settled, GenerationSettled, expect=1
            )

            async def completed() -> bool:
                return (await order_status(db, order_id))["status"] == "completed"

            await eventually(completed, what="order completed")

        assert [(s.order_id, s.complete_count, s.failed_count) for s in settled] == [
            (order_id, 3, 0)
        ]
        assert f"Duplicate request for order_id={order_id}" in orchestrator.log()
        generates = await consume(
            kafka_bootstrap, topics.generate, VariantGenerate, expect=3
        )
        assert len(generates) == 3
        row = await order_status(db, order_id)
        assert row["completed_at"] == settled[0].settled_at
        assert orchestrator.terminate() == 0
    finally:
        orchestrator.terminate()


async def test_generation_timeout_redispatches_a_variant_whose_completion_never_came(
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    order = await paid_order(db)
    order_id: uuid.UUID = order["id"]
    env = process_env(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        workdir=tmp_path,
    ) | {
        "ORCHESTRATOR_GENERATION_TIMEOUT_S": "3",
        "ORCHESTRATOR_SWEEP_INTERVAL_S": "0.5",
        "ORCHESTRATOR_MAX_DISPATCHES": "2",
    }
    orchestrator = OrchestratorProcess(env, tmp_path / "orchestrator.log")
    finalizer = finalizer_settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    orchestrator.start()
    try:
        await orchestrator.wait_for_log(READY_LINE)
        await send(kafka_bootstrap, topics.requested, request_for(order))
        await consume(
            kafka_bootstrap, topics.generate, VariantGenerate, expect=3, settle_s=0
        )
        await send(
            kafka_bootstrap,
            topics.completed,
            completion(order_id, 1),
            completion(order_id, 2),
        )

        async with running_finalizer(finalizer):
            generates = await consume(
                kafka_bootstrap, topics.generate, VariantGenerate, expect=4
            )
            settled = await consume(
                kafka_bootstrap, topics.settled, GenerationSettled, expect=1
            )

            async def stored() -> bool:
                cursor = await db.execute("select * from failed_jobs")
                return len(await cursor.fetchall()) == 1

            await eventually(stored, what="the timed-out variant's failed_jobs row")
    finally:
        orchestrator.terminate()

    assert [(m.variant_number, m.dispatch, m.attempt) for m in generates[3:]] == [
        (3, 2, 1)
    ]
    assert [(s.complete_count, s.failed_count) for s in settled] == [(2, 1)]
    cursor = await db.execute("select * from failed_jobs")
    job = (await cursor.fetchall())[0]
    assert (job["order_id"], job["job_type"]) == (order_id, "variant.generate")
    assert (job["retry_count"], job["source_topic"]) == (2, topics.generate)
    assert VariantGenerate.model_validate(job["event_data"]).variant_number == 3
    cursor = await db.execute(
        "select status from song_variants where order_id = %s and variant_number = 3",
        (order_id,),
    )
    assert await cursor.fetchone() == {"status": VariantStatus.FAILED.value}
    assert (await order_status(db, order_id))["status"] == "completed"
