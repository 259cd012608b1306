"""The orchestrator's agents in faust's test context, with real Kafka and Postgres.

Each agent yields what it did with a message; the test context records it
in ``results``. What the agents publish is read back from the real topics.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from songswipe.orchestrator.app import Orchestrator
from songswipe.shared.db import Connection
from songswipe.shared.messages import (
    UNREADABLE_ORDER_ID,
    DeadLetter,
    GenerationRequested,
    GenerationSettled,
    SongBrief,
    VariantCompleted,
    VariantGenerate,
)
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import Topics
from tests.finalizer.helpers import finalizer_settings, running_finalizer
from tests.orchestrator.helpers import completion, request_for
from tests.support import (
    consume,
    eventually,
    insert_customization,
    insert_order,
    order_with_outcomes,
)

COMPLETE = VariantStatus.COMPLETE
FAILED = VariantStatus.FAILED


async def fan_out(
    orchestrator: Orchestrator, *requests: GenerationRequested
) -> list[str]:
    async with orchestrator.requested_agent.test_context() as agent:
        for request in requests:
            await agent.put(request.to_bytes(), key=request.key)
        return list(agent.results.values())


async def complete(
    orchestrator: Orchestrator, *completions: VariantCompleted
) -> list[str]:
    async with orchestrator.completed_agent.test_context() as agent:
        for message in completions:
            await agent.put(message.to_bytes(), key=message.key)
        return list(agent.results.values())


async def paid_order(db: Connection, **customization: Any) -> dict[str, Any]:
    return await insert_order(db, await insert_customization(db, **customization))


async def order_status(db: Connection, order_id: uuid.UUID) -> dict[str, Any]:
    cursor = await db.execute("select * from orders where id = %s", (order_id,))
    row = await cursor.fetchone()
    assert row is not None
    return row


async def test_request_fans_out_three_variants_and_a_duplicate_changes_nothing(
    db: Connection, topics: Topics, orchestrator: Orchestrator, kafka_bootstrap: str
) -> None:
    customization = await insert_customization(db, song_length_seconds=45)
    order = await insert_order(db, customization)
    request = request_for(order)

    outcomes = await fan_out(orchestrator, request, request)

    assert outcomes == ["fanned_out", "duplicate"]
    assert (await order_status(db, order["id"]))["status"] == "generating"
    cursor = await db.execute(
        "select variant_number, status, attempt_count from song_variants"
        " where order_id = %s order by variant_number",
        (order["id"],),
    )
    assert await cursor.fetchall() == [
        {"variant_number": n, "status": "pending", "attempt_count": 0}
        for n in (1, 2, 3)
    ]

    generates = await consume(
        kafka_bootstrap, topics.generate, VariantGenerate, expect=3
    )
    assert sorted(m.variant_number for m in generates) == [1, 2, 3]
    assert {(m.order_id, m.user_id, m.attempt, m.dispatch) for m in generates} == {
        (order["id"], order["user_id"], 1, 1)
    }
    assert {m.brief for m in generates} == {SongBrief.from_customization(customization)}
    assert generates[0].brief.length_s == 45


async def test_three_completions_settle_once(
    db: Connection, topics: Topics, orchestrator: Orchestrator, kafka_bootstrap: str
) -> None:
    order = await paid_order(db)
    await fan_out(orchestrator, request_for(order))

    outcomes = await complete(
        orchestrator,
        completion(order["id"], 1),
        completion(order["id"], 2),
        completion(order["id"], 2),
        completion(order["id"], 3),
        completion(order["id"], 3),
    )

    assert outcomes == ["recorded", "recorded", "duplicate", "recorded", "duplicate"]
    settled = await consume(
        kafka_bootstrap, topics.settled, GenerationSettled, expect=1
    )
    assert [(s.order_id, s.complete_count, s.failed_count) for s in settled] == [
        (order["id"], 3, 0)
    ]


@pytest.mark.parametrize(
    ("outcomes", "order_outcome"),
    [((FAILED, FAILED, FAILED), "failed"), ((COMPLETE, FAILED, COMPLETE), "completed")],
)
async def test_settlement_gives_the_order_its_final_status(
    db: Connection,
    topics: Topics,
    orchestrator: Orchestrator,
    kafka_bootstrap: str,
    database_url: str,
    outcomes: tuple[VariantStatus, ...],
    order_outcome: str,
) -> None:
    order = await paid_order(db)
    await fan_out(orchestrator, request_for(order))
    settings = finalizer_settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    async with running_finalizer(settings):
        await complete(
            orchestrator,
            *(
                completion(order["id"], n, status)
                for n, status in enumerate(outcomes, 1)
            ),
        )

        async def settled() -> bool:
            return (await order_status(db, order["id"]))["status"] == order_outcome

        await eventually(settled, what=f"order {order_outcome}")

    row = await order_status(db, order["id"])
    assert row["completed_at"] is not None
    settlements = await consume(
        kafka_bootstrap, topics.settled, GenerationSettled, expect=1
    )
    assert [(s.complete_count, s.failed_count) for s in settlements] == [
        (outcomes.count(COMPLETE), outcomes.count(FAILED))
    ]


async def test_missing_customization_fails_the_order_with_one_dead_letter(
    db: Connection,
    topics: Topics,
    orchestrator: Orchestrator,
    kafka_bootstrap: str,
    database_url: str,
) -> None:
    order = await paid_order(db)
    request = request_for(order, customization_id=uuid.uuid4())
    settings = finalizer_settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    async with running_finalizer(settings):
        outcomes = await fan_out(orchestrator, request, request)

        async def stored() -> bool:
            cursor = await db.execute("select count(*) as n from failed_jobs")
            row = await cursor.fetchone()
            return row is not None and row["n"] >= 1

        await eventually(stored, what="a failed_jobs row")

    assert outcomes == ["rejected", "finished"]
    row = await order_status(db, order["id"])
    assert row["status"] == "failed"
    assert "not found" in row["error"]
    cursor = await db.execute("select * from failed_jobs")
    jobs = await cursor.fetchall()
    assert len(jobs) == 1
    assert jobs[0]["order_id"] == order["id"]
    assert jobs[0]["job_type"] == "generation.requested"
    assert jobs[0]["source_topic"] == topics.requested
    assert jobs[0]["event_data"]["stripe_session_id"] == order["stripe_session_id"]
    assert jobs[0]["error_message"].startswith("NotFound: customization")
    letters = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=1)
    assert len(letters) == 1
    assert (
        await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=0) == []
    )
    cursor = await db.execute("select count(*) as n from song_variants")
    assert await cursor.fetchone() == {"n": 0}


async def test_an_unexpected_fan_out_fault_fails_the_order_and_keeps_the_request(
    db: Connection,
    topics: Topics,
    orchestrator: Orchestrator,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = await paid_order(db)

    async def broken_start(order_id: uuid.UUID) -> None:
        raise RuntimeError(f"a bug while starting {order_id}")

    monkeypatch.setattr(orchestrator._requests, "start", broken_start)
    outcomes = await fan_out(orchestrator, request_for(order))

    assert outcomes == ["error"]
    row = await order_status(db, order["id"])
    assert row["status"] == "failed"
    assert "a bug while starting" in row["error"]
    [letter] = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=1)
    assert letter.order_id == order["id"]
    assert letter.error_type == "RuntimeError"
    kept = GenerationRequested.model_validate(letter.payload)
    assert kept.customization_id == order["customization_id"]
    assert (
        await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=0) == []
    )


async def test_unreadable_messages_are_dead_lettered_and_unknown_ones_skipped(
    db: Connection, topics: Topics, orchestrator: Orchestrator, kafka_bootstrap: str
) -> None:
    order = await paid_order(db)
    order_key = str(order["id"]).encode()

    async with orchestrator.requested_agent.test_context() as agent:
        await agent.put(b"{not json", key=order_key)
        await agent.put(None, key=b"x")
        await agent.put(request_for(order).to_bytes(), key=order_key)
        requested = list(agent.results.values())
    completed = await complete(orchestrator, completion(uuid.uuid4(), 1))

    assert requested == ["malformed", "malformed", "fanned_out"]
    assert completed == ["unknown"]
    letters = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=2)
    by_raw = {letter.payload["raw"]: letter for letter in letters}
    assert set(by_raw) == {"{not json", ""}
    assert by_raw["{not json"].order_id == order["id"]
    assert by_raw[""].order_id == UNREADABLE_ORDER_ID
    assert {letter.source_topic for letter in letters} == {topics.requested}
    assert {letter.job_type for letter in letters} == {"generation.requested"}


async def test_a_replayed_variant_that_succeeds_settles_the_order_again(
    db: Connection, topics: Topics, orchestrator: Orchestrator, kafka_bootstrap: str
) -> None:
    order = await paid_order(db)
    await fan_out(orchestrator, request_for(order))

    outcomes = await complete(
        orchestrator,
        completion(order["id"], 1),
        completion(order["id"], 2, FAILED),
        completion(order["id"], 3),
        completion(order["id"], 2, COMPLETE),
        completion(order["id"], 2, FAILED),
    )

    assert outcomes == ["recorded", "recorded", "recorded", "recovered", "duplicate"]
    settled = await consume(
        kafka_bootstrap, topics.settled, GenerationSettled, expect=2
    )
    assert [(s.complete_count, s.failed_count) for s in settled] == [(2, 1), (3, 0)]


async def test_a_late_completion_of_a_reopened_order_settles_it_from_the_database(
    db: Connection, topics: Topics, orchestrator: Orchestrator, kafka_bootstrap: str
) -> None:
    # Replayed after the sweep forgot the order: the order was reopened, and
    # its replayed variant has just completed.
    reopened = await order_with_outcomes(
        db, order_status="generating", variant_statuses=("complete", "failed", "failed")
    )
    settled_long_ago = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "failed"),
    )
    still_running = await order_with_outcomes(
        db,
        order_status="generating",
        variant_statuses=("complete", "failed", "pending"),
    )

    outcomes = await complete(
        orchestrator,
        completion(reopened["id"], 1),
        completion(settled_long_ago["id"], 1),
        completion(still_running["id"], 1),
    )

    assert outcomes == ["settled_late", "unknown", "unknown"]
    settled = await consume(
        kafka_bootstrap, topics.settled, GenerationSettled, expect=1
    )
    assert [(s.order_id, s.complete_count, s.failed_count) for s in settled] == [
        (reopened["id"], 1, 2)
    ]
