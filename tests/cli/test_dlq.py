"""``songswipe dlq list`` and ``dlq replay`` against the real database and Kafka."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from songswipe.cli.errors import ExitCode
from songswipe.shared.db import Connection
from songswipe.shared.messages import DeadLetter, GenerationRequested, VariantGenerate
from songswipe.shared.topics import Topics
from tests.cli.cli import invoke, run_command, settings_for
from tests.cli.seed import insert_dead_letter, requested_work
from tests.support import consume, order_with_outcomes


async def _variant(db: Connection, order_id: Any, number: int) -> dict[str, Any]:
    cursor = await db.execute(
        "select * from song_variants where order_id = %s and variant_number = %s",
        (order_id, number),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def _dead_letter_row(db: Connection, letter_id: Any) -> dict[str, Any]:
    cursor = await db.execute("select * from failed_jobs where id = %s", (letter_id,))
    row = await cursor.fetchone()
    assert row is not None
    return row


async def test_list_shows_newest_first_and_filters_replayed(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db, order_status="completed", variant_statuses=("complete", "failed", "failed")
    )
    older = await insert_dead_letter(db, topics, order=order, variant_number=2)
    newer = await insert_dead_letter(db, topics, order=order, variant_number=3)
    await db.execute(
        "update failed_jobs set replayed_at = now(), replay_count = 1 where id = %s",
        (older.message_id,),
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    everything = await invoke(settings, "dlq", "list", "--json")
    pending = await invoke(settings, "dlq", "list", "--not-replayed", "--json")
    table = await invoke(settings, "dlq", "list")

    assert everything.exit_code == ExitCode.OK, everything.output
    listed = json.loads(everything.stdout)
    assert [x["id"] for x in listed] == [str(newer.message_id), str(older.message_id)]
    assert listed[0]["error_message"] == "ElevenLabs returned 500"
    assert listed[0]["variant_number"] == 3
    assert [x["id"] for x in json.loads(pending.stdout)] == [str(newer.message_id)]
    assert table.exit_code == ExitCode.OK
    assert str(newer.message_id)[:8] in table.stdout


async def test_replay_sends_attempt_one_and_records_the_replay(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "failed"),
    )
    letter = await insert_dead_letter(db, topics, order=order, variant_number=3)
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay", str(letter.message_id))

    assert result.exit_code == ExitCode.OK, result.output
    sent = await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=1)
    assert len(sent) == 1
    assert sent[0].order_id == order["id"]
    assert sent[0].variant_number == 3
    assert sent[0].attempt == 1
    assert sent[0].due_at is None
    assert sent[0].dispatch == 2
    assert sent[0].brief.recipient_name == order["customization"]["recipient_name"]
    variant = await _variant(db, order["id"], 3)
    assert (variant["status"], variant["attempt_count"], variant["error"]) == (
        "pending",
        0,
        None,
    )
    row = await _dead_letter_row(db, letter.message_id)
    assert row["replayed_at"] is not None
    assert row["replay_count"] == 1


async def test_replaying_twice_does_not_duplicate_the_work(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "failed"),
    )
    letter = await insert_dead_letter(db, topics, order=order, variant_number=3)
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    first = await invoke(settings, "dlq", "replay", str(letter.message_id))
    second = await invoke(settings, "dlq", "replay", str(letter.message_id))
    everything = await invoke(settings, "dlq", "replay", "--all")

    assert first.exit_code == ExitCode.OK, first.output
    assert second.exit_code == ExitCode.REFUSED, second.output
    assert "already replayed" in second.stdout
    assert everything.exit_code == ExitCode.OK
    assert "Nothing to replay" in everything.stdout
    sent = await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=1)
    assert len(sent) == 1
    row = await _dead_letter_row(db, letter.message_id)
    assert row["replay_count"] == 1


async def test_concurrent_replays_send_the_work_once(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "failed"),
    )
    letter = await insert_dead_letter(db, topics, order=order, variant_number=3)
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_PARTITIONS": "3",
    }

    results = await asyncio.gather(
        *(run_command("dlq", "replay", str(letter.message_id), env=env) for _ in "abc")
    )

    assert sorted(r.code for r in results) == [
        ExitCode.OK,
        ExitCode.REFUSED,
        ExitCode.REFUSED,
    ]
    sent = await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=1)
    assert len(sent) == 1
    row = await _dead_letter_row(db, letter.message_id)
    assert row["replay_count"] == 1


async def test_replay_all_sends_each_failed_variant_once(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db, order_status="failed", variant_statuses=("failed", "failed", "failed")
    )
    for number in (1, 2, 3):
        await insert_dead_letter(db, topics, order=order, variant_number=number)
    # The same variant dead-lettered twice (a timeout and a failure) is one work.
    await insert_dead_letter(db, topics, order=order, variant_number=2)
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay", "--all")

    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout.count("replayed:") == 3
    assert result.stdout.count("refused:") == 1
    sent = await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=3)
    assert sorted(m.variant_number for m in sent) == [1, 2, 3]
    cursor = await db.execute("select status from orders where id = %s", (order["id"],))
    assert await cursor.fetchone() == {"status": "generating"}


async def test_replay_refuses_work_that_is_not_a_variant(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    letter = await insert_dead_letter(
        db,
        topics,
        job_type="stripe.checkout",
        payload={"event_id": "evt_1", "reason": "customization missing"},
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay", str(letter.message_id))

    assert result.exit_code == ExitCode.REFUSED
    assert "stripe.checkout" in result.stdout
    sent = await consume(
        kafka_bootstrap, topics.generate, VariantGenerate, expect=0, settle_s=0.5
    )
    assert sent == []
    row = await _dead_letter_row(db, letter.message_id)
    assert row["replayed_at"] is None


async def test_replay_of_an_unknown_id_exits_not_found(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(
        settings, "dlq", "replay", "00000000-0000-4000-8000-000000000000"
    )

    assert result.exit_code == ExitCode.NOT_FOUND
    assert "No dead letter" in result.stderr


async def test_replay_needs_an_id_or_all(
    database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay")

    assert result.exit_code == ExitCode.USAGE


async def test_a_dead_lettered_request_reopens_its_failed_order_once(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db, order_status="failed", variant_statuses=("failed", "failed", "failed")
    )
    await db.execute(
        "update orders set error = 'customization missing' where id = %s",
        (order["id"],),
    )
    letter = await insert_dead_letter(
        db,
        topics,
        order=order,
        job_type="generation.requested",
        payload=requested_work(order).model_dump(mode="json"),
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    first = await invoke(settings, "dlq", "replay", str(letter.message_id))
    second = await invoke(settings, "dlq", "replay", str(letter.message_id))

    assert first.exit_code == ExitCode.OK, first.output
    assert second.exit_code == ExitCode.REFUSED, second.output
    sent = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=1
    )
    assert [(m.order_id, m.customization_id) for m in sent] == [
        (order["id"], order["customization_id"])
    ]
    cursor = await db.execute(
        "select status, error from orders where id = %s", (order["id"],)
    )
    assert await cursor.fetchone() == {"status": "generating", "error": None}


async def test_a_request_of_a_completed_order_is_not_replayed(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "complete"),
    )
    letter = await insert_dead_letter(
        db,
        topics,
        order=order,
        job_type="generation.requested",
        payload=requested_work(order).model_dump(mode="json"),
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay", str(letter.message_id))

    assert result.exit_code == ExitCode.REFUSED
    assert "completed" in result.stdout
    sent = await consume(
        kafka_bootstrap, topics.requested, GenerationRequested, expect=0, settle_s=0.5
    )
    assert sent == []


async def _stranded(
    db: Connection, topics: Topics, ago: str
) -> tuple[dict[str, Any], DeadLetter]:
    """What a replay killed between its commit and its publish leaves behind,
    ``ago`` (an interval) before now: variant 3 pending, nothing sent."""
    order = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "failed"),
    )
    letter = await insert_dead_letter(db, topics, order=order, variant_number=3)
    async with db.transaction():
        await db.execute("select set_config('songswipe.replay', 'on', true)")
        await db.execute(
            "update song_variants set status = 'pending', attempt_count = 0,"
            " error = null, started_at = null, completed_at = null"
            " where order_id = %s and variant_number = 3",
            (order["id"],),
        )
    await db.execute(
        "update failed_jobs set replayed_at = now() - %s::interval,"
        " replay_count = 1 where id = %s",
        (ago, letter.message_id),
    )
    return order, letter


async def test_a_replay_that_never_went_out_is_sent_again_once_stranded(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order, letter = await _stranded(db, topics, "11 minutes")
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay", str(letter.message_id))

    assert result.exit_code == ExitCode.OK, result.output
    assert "never started" in result.stdout
    sent = await consume(kafka_bootstrap, topics.generate, VariantGenerate, expect=1)
    assert [(w.variant_number, w.attempt) for w in sent] == [(3, 1)]
    row = await _dead_letter_row(db, letter.message_id)
    assert row["replay_count"] == 2
    assert (await _variant(db, order["id"], 3))["status"] == "pending"


async def test_a_recent_replay_still_pending_is_not_sent_again(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    _, letter = await _stranded(db, topics, "1 minute")
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "dlq", "replay", str(letter.message_id))

    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "replay it again" in result.stdout
    sent = await consume(
        kafka_bootstrap, topics.generate, VariantGenerate, expect=0, timeout_s=1.5
    )
    assert sent == []
    assert (await _dead_letter_row(db, letter.message_id))["replay_count"] == 1
