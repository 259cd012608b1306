"""The generator against real Kafka and Postgres, with a fake ElevenLabs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import miniaudio
import pytest
from prometheus_client import REGISTRY

from songswipe.generator.settings import GeneratorSettings
from songswipe.shared.db import Connection
from songswipe.shared.messages import DeadLetter, VariantCompleted, VariantGenerate
from songswipe.shared.paths import song_object_path
from songswipe.shared.topics import Topics
from tests.generator.fake_elevenlabs import FakeElevenLabs, Reply, fake_elevenlabs
from tests.generator.helpers import (
    TEST_RETRY_DELAYS_MS,
    job_for,
    order_with_variants,
    publish_all,
    running_generator,
    settings_for,
    variant_row,
    variant_status,
)
from tests.support import consume, eventually


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


#: Scheduling slack: a retry is never early, but the clocks of the test and
#: the fake server are read a few microseconds apart.
CLOCK_SLACK_S = 0.01


@pytest.fixture
def fake() -> Iterator[FakeElevenLabs]:
    with fake_elevenlabs() as server:
        yield server


@pytest.fixture
def songs_dir(tmp_path: Path) -> Path:
    return tmp_path / "songs"


@pytest.fixture
def settings(
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    songs_dir: Path,
    fake: FakeElevenLabs,
) -> GeneratorSettings:
    """A generator that calls the fake ElevenLabs and writes to ``songs_dir``."""
    return settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=songs_dir,
        fake_url=fake.url,
    )


async def test_a_message_gives_one_complete_variant_and_a_playable_mp3(
    db: Connection,
    kafka_bootstrap: str,
    topics: Topics,
    fake: FakeElevenLabs,
    settings: GeneratorSettings,
) -> None:
    customization, order = await order_with_variants(db, recipient_name="Maya")
    attempts_before = _metric(
        "songswipe_generator_attempts_total", provider="elevenlabs"
    )

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
        )

        async def complete() -> bool:
            return await variant_status(db, order["id"], 1) == "complete"

        await eventually(complete, what="variant 1 complete")
        completions = await consume(
            kafka_bootstrap, topics.completed, VariantCompleted, expect=1
        )

    row = await variant_row(db, order["id"], 1)
    expected_path = song_object_path(order["user_id"], order["id"], 1)
    assert row["storage_path"] == expected_path
    assert row["attempt_count"] == 1
    assert row["completed_at"] is not None
    decoded = miniaudio.decode((settings.songs_dir / expected_path).read_bytes())
    assert decoded.duration > 0.5

    assert [(c.status, c.storage_path) for c in completions] == [
        ("complete", expected_path)
    ]
    [request] = fake.received()
    assert request.headers["xi-api-key"] == "test-key"
    assert request.query["output_format"] == ["mp3_44100_128"]
    assert request.json()["music_length_ms"] == 10_000
    assert request.json()["model_id"] == "music_v1"
    assert "Maya" in request.prompt
    assert "Sam" in request.prompt
    attempts = _metric("songswipe_generator_attempts_total", provider="elevenlabs")
    assert attempts == attempts_before + 1


async def test_two_500s_then_success_take_three_attempts_spaced_by_the_tiers(
    db: Connection,
    kafka_bootstrap: str,
    topics: Topics,
    fake: FakeElevenLabs,
    settings: GeneratorSettings,
) -> None:
    customization, order = await order_with_variants(db, recipient_name="Noor")
    fake.plan("Noor", [Reply(500), Reply(502)])
    retries_before = [
        _metric("songswipe_generator_retries_total", reason=reason)
        for reason in ("http_500", "http_502")
    ]

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
        )

        async def complete() -> bool:
            return await variant_status(db, order["id"], 1) == "complete"

        await eventually(complete, what="variant 1 complete after two failures")
        completions = await consume(
            kafka_bootstrap, topics.completed, VariantCompleted, expect=1
        )

    first, second, third = fake.received("Noor")
    assert second.at - first.at >= TEST_RETRY_DELAYS_MS[0] / 1000 - CLOCK_SLACK_S
    assert third.at - second.at >= TEST_RETRY_DELAYS_MS[1] / 1000 - CLOCK_SLACK_S
    assert len(fake.received("Noor")) == 3
    assert (await variant_row(db, order["id"], 1))["attempt_count"] == 3
    assert [(c.status, c.attempt) for c in completions] == [("complete", 3)]

    tier_1 = await consume(kafka_bootstrap, topics.retry(1), VariantGenerate, expect=1)
    tier_2 = await consume(kafka_bootstrap, topics.retry(2), VariantGenerate, expect=1)
    assert [m.attempt for m in tier_1] == [2]
    assert [m.attempt for m in tier_2] == [3]
    assert all(m.due_at is not None for m in tier_1 + tier_2)
    retries_after = [
        _metric("songswipe_generator_retries_total", reason=reason)
        for reason in ("http_500", "http_502")
    ]
    assert retries_after == [before + 1 for before in retries_before]


async def test_a_429_waits_for_retry_after_without_holding_up_fresh_work(
    db: Connection,
    kafka_bootstrap: str,
    topics: Topics,
    fake: FakeElevenLabs,
    settings: GeneratorSettings,
) -> None:
    busy = {"detail": {"status": "system_busy", "message": "try again"}}
    fake.plan("Ava", [Reply(429, headers={"Retry-After": "2"}, json_body=busy)])
    ava, ava_order = await order_with_variants(db, recipient_name="Ava")
    ben, ben_order = await order_with_variants(db, recipient_name="Ben")

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(ava, ava_order, 1)]
        )

        async def ava_refused() -> bool:
            return len(fake.received("Ava")) == 1

        await eventually(ava_refused, what="Ava's first attempt")
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(ben, ben_order, 1)]
        )

        async def both_complete() -> bool:
            statuses = {
                await variant_status(db, ava_order["id"], 1),
                await variant_status(db, ben_order["id"], 1),
            }
            return statuses == {"complete"}

        await eventually(both_complete, what="both variants complete")

    first, retry = fake.received("Ava")
    [fresh] = fake.received("Ben")
    assert retry.at - first.at >= 2.0 - CLOCK_SLACK_S
    assert fresh.at < retry.at, "fresh work waited behind a delayed retry"
    [scheduled] = await consume(
        kafka_bootstrap, topics.retry(1), VariantGenerate, expect=1
    )
    assert scheduled.attempt == 2


async def test_a_400_is_dead_lettered_at_once_without_a_retry(
    db: Connection,
    kafka_bootstrap: str,
    topics: Topics,
    fake: FakeElevenLabs,
    settings: GeneratorSettings,
) -> None:
    refusal = {"detail": {"status": "invalid_prompt", "message": "prompt refused"}}
    fake.plan("Iris", [Reply(400, json_body=refusal)])
    customization, order = await order_with_variants(db, recipient_name="Iris")

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
        )

        async def failed() -> bool:
            return await variant_status(db, order["id"], 1) == "failed"

        await eventually(failed, what="variant 1 failed")
        letters = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=1)
        completions = await consume(
            kafka_bootstrap, topics.completed, VariantCompleted, expect=1
        )
        retries = await consume(
            kafka_bootstrap, topics.retry(1), VariantGenerate, expect=0
        )

    assert len(fake.received("Iris")) == 1
    assert retries == []
    row = await variant_row(db, order["id"], 1)
    assert "prompt refused" in row["error"]

    [letter] = letters
    assert letter.job_type == "variant.generate"
    assert letter.source_topic == topics.generate
    assert letter.attempt_count == 1
    assert letter.variant_number == 1
    assert letter.error_type == "ProviderError"
    assert "Traceback" in letter.error_stack
    assert VariantGenerate.model_validate(letter.payload).attempt == 1
    assert [(c.status, c.attempt) for c in completions] == [("failed", 1)]


async def test_five_500s_end_in_a_dead_letter_with_attempt_count_5(
    db: Connection,
    kafka_bootstrap: str,
    topics: Topics,
    fake: FakeElevenLabs,
    settings: GeneratorSettings,
) -> None:
    fake.plan("Omar", [Reply(500)] * 5)
    customization, order = await order_with_variants(db, recipient_name="Omar")

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
        )

        async def failed() -> bool:
            return await variant_status(db, order["id"], 1) == "failed"

        await eventually(failed, timeout_s=30, what="variant 1 failed")
        letters = await consume(kafka_bootstrap, topics.dlq, DeadLetter, expect=1)
        completions = await consume(
            kafka_bootstrap, topics.completed, VariantCompleted, expect=1
        )

    attempts = fake.received("Omar")
    assert len(attempts) == 5
    for tier, (earlier, later) in enumerate(itertools.pairwise(attempts)):
        assert (
            later.at - earlier.at >= TEST_RETRY_DELAYS_MS[tier] / 1000 - CLOCK_SLACK_S
        )
    [letter] = letters
    assert letter.attempt_count == 5
    assert letter.source_topic == topics.retry(4)
    assert VariantGenerate.model_validate(letter.payload).attempt == 5
    assert (await variant_row(db, order["id"], 1))["attempt_count"] == 5
    assert [(c.status, c.attempt) for c in completions] == [("failed", 5)]


async def test_a_complete_variant_is_announced_again_not_generated_again(
    db: Connection,
    kafka_bootstrap: str,
    topics: Topics,
    fake: FakeElevenLabs,
    settings: GeneratorSettings,
) -> None:
    customization, order = await order_with_variants(db, recipient_name="Lena")
    path = song_object_path(order["user_id"], order["id"], 1)
    await db.execute(
        "update song_variants set status = 'complete', storage_path = %s,"
        " attempt_count = 1, completed_at = now() where order_id = %s",
        (path, order["id"]),
    )
    before = await variant_row(db, order["id"], 1)

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 1)]
        )
        completions = await consume(
            kafka_bootstrap, topics.completed, VariantCompleted, expect=1
        )

    assert fake.received() == []
    assert [(c.status, c.storage_path) for c in completions] == [("complete", path)]
    assert await variant_row(db, order["id"], 1) == before


async def test_the_offline_provider_stores_a_song_of_the_requested_length(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    songs_dir: Path,
) -> None:
    customization, order = await order_with_variants(
        db, variants=(2,), recipient_name="Theo", mood="nostalgic", genre="folk"
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        songs_dir=songs_dir,
    )

    async with running_generator(settings):
        await publish_all(
            kafka_bootstrap, topics.generate, [job_for(customization, order, 2)]
        )

        async def complete() -> bool:
            return await variant_status(db, order["id"], 2) == "complete"

        await eventually(complete, what="offline variant complete")

    row = await variant_row(db, order["id"], 2)
    decoded = miniaudio.decode((songs_dir / row["storage_path"]).read_bytes())
    assert abs(decoded.duration - customization["song_length_seconds"]) < 1.0


async def test_a_full_generator_keeps_to_its_concurrency_and_finishes_the_backlog(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    songs_dir: Path,
) -> None:
    orders = [await order_with_variants(db, variants=(1, 2, 3)) for _ in range(6)]
    jobs = [job_for(c, o, n) for c, o in orders for n in (1, 2, 3)]
    peak = 0

    with fake_elevenlabs(default=Reply(delay_s=0.2)) as slow:
        settings = settings_for(
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            topics=topics,
            songs_dir=songs_dir,
            fake_url=slow.url,
            generator_concurrency=8,
        )
        async with running_generator(settings):
            await publish_all(kafka_bootstrap, topics.generate, list(jobs))

            async def all_complete() -> bool:
                nonlocal peak
                peak = max(peak, int(_metric("songswipe_generator_in_flight")))
                cursor = await db.execute(
                    "select count(*) as n from song_variants where status = 'complete'"
                )
                row = await cursor.fetchone()
                return row is not None and row["n"] == len(jobs)

            await eventually(all_complete, interval_s=0.02, what="18 variants complete")

    assert 1 <= peak <= 8
    assert len(slow.received()) == len(jobs)
