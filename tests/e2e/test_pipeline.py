"""The four services as separate processes against real Kafka and Postgres."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import miniaudio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from songswipe.cli.errors import ExitCode
from songswipe.cli.supervisor import SERVICES
from songswipe.shared.db import Connection
from songswipe.shared.topics import MAX_ATTEMPTS, Topics
from tests.cli.cli import run_command
from tests.e2e.harness import Pipeline, fake_elevenlabs, place_order, running_pipeline
from tests.support import eventually

pytestmark = pytest.mark.slow

SETTLE_TIMEOUT_S = 90.0
SONG_LENGTH_S = 10


async def _order(db: Connection, order_id: uuid.UUID) -> dict[str, Any]:
    cursor = await db.execute("select * from orders where id = %s", (order_id,))
    row = await cursor.fetchone()
    assert row is not None
    return row


async def _variants(db: Connection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    cursor = await db.execute(
        "select * from song_variants where order_id = %s order by variant_number",
        (order_id,),
    )
    return await cursor.fetchall()


async def _dead_letters(db: Connection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    cursor = await db.execute(
        "select * from failed_jobs where order_id = %s", (order_id,)
    )
    return await cursor.fetchall()


async def _wait_settled(
    db: Connection, pipeline: Pipeline, order_id: uuid.UUID
) -> None:
    async def settled() -> bool:
        pipeline.supervisor.check_alive()
        order = await _order(db, order_id)
        variants = await _variants(db, order_id)
        return order["status"] in ("completed", "failed") and all(
            v["status"] in ("complete", "failed") for v in variants
        )

    try:
        await eventually(settled, timeout_s=SETTLE_TIMEOUT_S, what="settlement")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pipeline.logs()}") from None


def _duration_s(path: Path) -> float:
    decoded = miniaudio.decode_file(str(path))
    return float(decoded.duration)


def _cli_env(pipeline: Pipeline) -> dict[str, str]:
    """The variables the real ``songswipe`` command needs for this pipeline."""
    keys = (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "KAFKA_TOPIC_PREFIX",
        "KAFKA_PARTITIONS",
    )
    return {
        **{key: pipeline.env[key] for key in keys},
        "WEBHOOK_URL": pipeline.webhook_url,
    }


def _metric_sum(exposition: str, family: str) -> float:
    """The sum of a counter's samples (every label set) in a /metrics page."""
    return sum(
        sample.value
        for metric in text_string_to_metric_families(exposition)
        if metric.name == family
        for sample in metric.samples
        if sample.name == f"{family}_total"
    )


def _not_json_lines(log_dir: Path) -> dict[str, list[str]]:
    """Per service, the log lines that are not one JSON object."""
    found: dict[str, list[str]] = {}
    for service in SERVICES:
        for line in (log_dir / f"{service}.log").read_text().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                found.setdefault(service, []).append(line)
                continue
            if not {"level", "message"} <= set(entry):
                found.setdefault(service, []).append(line)
    return found


async def test_a_signed_event_gives_three_playable_songs(
    db: Connection,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
) -> None:
    async with running_pipeline(
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
    ) as pipeline:
        order_id = await place_order(db, pipeline, song_length_seconds=SONG_LENGTH_S)
        await _wait_settled(db, pipeline, order_id)

        async with httpx.AsyncClient(timeout=5.0) as client:
            scraped = {
                service: await client.get(url)
                for service, url in pipeline.metrics_urls.items()
            }
        demo = await run_command(
            "demo",
            "--orders",
            "2",
            env={**_cli_env(pipeline), "SONGS_DIR": str(pipeline.songs_dir)},
        )

    order = await _order(db, order_id)
    variants = await _variants(db, order_id)
    assert order["status"] == "completed"
    assert [v["status"] for v in variants] == ["complete"] * 3
    assert [v["attempt_count"] for v in variants] == [1, 1, 1]
    for variant in variants:
        song = pipeline.songs_dir / variant["storage_path"]
        assert abs(_duration_s(song) - SONG_LENGTH_S) <= 1.0
    assert await _dead_letters(db, order_id) == []

    for service, response in scraped.items():
        assert response.status_code == httpx.codes.OK, service
        assert f"songswipe_{service}_" in response.text, service
    assert (
        _metric_sum(scraped["webhook"].text, "songswipe_webhook_orders_recorded") == 1
    )
    assert _metric_sum(scraped["generator"].text, "songswipe_generator_attempts") == 3
    assert (
        _metric_sum(scraped["orchestrator"].text, "songswipe_orchestrator_settlements")
        == 1
    )
    assert (
        _metric_sum(scraped["finalizer"].text, "songswipe_finalizer_orders_settled")
        == 1
    )
    assert _not_json_lines(pipeline.log_dir) == {}

    assert demo.code == ExitCode.OK, demo.stdout + demo.stderr
    assert demo.stdout.count("is completed") == 2, demo.stdout
    demo_songs = re.findall(r"variant \d: (\S+\.mp3)", demo.stdout)
    assert len(demo_songs) == 6
    assert all(_duration_s(Path(song)) > 1.0 for song in demo_songs)


async def test_a_failing_variant_is_dead_lettered_then_replayed(
    db: Connection,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
) -> None:
    with fake_elevenlabs(failing=lambda prompt: "a bold take" in prompt) as fake:
        extra_env = {
            "ELEVENLABS_API_KEY": fake.api_key,
            "ELEVENLABS_BASE_URL": fake.base_url,
            "GENERATOR_RETRY_DELAYS_MS": "50,50,50,50",
            "GENERATOR_RETRY_JITTER": "0",
        }
        async with running_pipeline(
            tmp_path,
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            topics=topics,
            extra_env=extra_env,
        ) as pipeline:
            order_id = await place_order(
                db, pipeline, song_length_seconds=SONG_LENGTH_S
            )
            await _wait_settled(db, pipeline, order_id)

            async def dead_lettered() -> bool:
                return len(await _dead_letters(db, order_id)) > 0

            await eventually(dead_lettered, timeout_s=20, what="the failed_jobs row")
            order = await _order(db, order_id)
            variants = await _variants(db, order_id)
            letters = await _dead_letters(db, order_id)
            assert order["status"] == "completed"
            assert [v["status"] for v in variants] == ["complete", "complete", "failed"]
            assert variants[2]["attempt_count"] == MAX_ATTEMPTS
            assert len(letters) == 1
            assert letters[0]["retry_count"] == MAX_ATTEMPTS

            fake.heal()
            cli_env = _cli_env(pipeline)
            listed = await run_command("dlq", "list", "--json", env=cli_env)
            replayed = await run_command(
                "dlq", "replay", str(letters[0]["id"]), env=cli_env
            )
            assert listed.code == ExitCode.OK, listed.stderr
            assert [x["id"] for x in json.loads(listed.stdout)] == [
                str(letters[0]["id"])
            ]
            assert replayed.code == ExitCode.OK, replayed.stdout + replayed.stderr

            async def third_song() -> bool:
                variants = await _variants(db, order_id)
                return bool(variants[2]["status"] == "complete")

            try:
                await eventually(third_song, timeout_s=30, what="the replayed song")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{pipeline.logs()}") from None
            again = await run_command(
                "dlq", "replay", str(letters[0]["id"]), env=cli_env
            )

    variants = await _variants(db, order_id)
    assert [v["status"] for v in variants] == ["complete"] * 3
    assert variants[2]["attempt_count"] == 1
    for variant in variants:
        assert _duration_s(pipeline.songs_dir / variant["storage_path"]) > 0.5
    assert (await _order(db, order_id))["status"] == "completed"
    letter = (await _dead_letters(db, order_id))[0]
    assert letter["replayed_at"] is not None
    assert letter["replay_count"] == 1
    assert again.code == ExitCode.REFUSED
    bold_requests = [r for r in fake.requests if "a bold take" in r["prompt"]]
    assert len(bold_requests) == MAX_ATTEMPTS + 1


async def test_replaying_a_failed_order_brings_it_to_completed(
    db: Connection,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
) -> None:
    with fake_elevenlabs(failing=lambda prompt: True) as fake:
        extra_env = {
            "ELEVENLABS_API_KEY": fake.api_key,
            "ELEVENLABS_BASE_URL": fake.base_url,
            "GENERATOR_RETRY_DELAYS_MS": "20,20,20,20",
            "GENERATOR_RETRY_JITTER": "0",
        }
        async with running_pipeline(
            tmp_path,
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            topics=topics,
            extra_env=extra_env,
        ) as pipeline:
            order_id = await place_order(
                db, pipeline, song_length_seconds=SONG_LENGTH_S
            )
            await _wait_settled(db, pipeline, order_id)

            async def three_dead_letters() -> bool:
                return len(await _dead_letters(db, order_id)) == 3

            await eventually(three_dead_letters, timeout_s=20, what="3 dead letters")
            assert (await _order(db, order_id))["status"] == "failed"

            fake.heal()
            replayed = await run_command(
                "dlq", "replay", "--all", env=_cli_env(pipeline)
            )
            assert replayed.code == ExitCode.OK, replayed.stdout + replayed.stderr

            async def completed() -> bool:
                variants = await _variants(db, order_id)
                order = await _order(db, order_id)
                return order["status"] == "completed" and all(
                    v["status"] == "complete" for v in variants
                )

            try:
                await eventually(completed, timeout_s=30, what="the replayed order")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{pipeline.logs()}") from None

    assert replayed.stdout.count("replayed:") == 3
    letters = await _dead_letters(db, order_id)
    assert [row["replay_count"] for row in letters] == [1, 1, 1]
