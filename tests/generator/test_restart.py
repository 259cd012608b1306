"""A generator killed with work in flight loses nothing and repeats no song."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from songswipe.generator.prompt import VARIANT_DIRECTIONS
from songswipe.generator.settings import GeneratorSettings
from songswipe.shared.db import Connection
from songswipe.shared.messages import DeadLetter
from songswipe.shared.topics import Topics
from tests.generator.fake_elevenlabs import FakeElevenLabs, Reply, fake_elevenlabs
from tests.generator.helpers import (
    job_for,
    order_with_variants,
    publish_all,
    settings_env,
    settings_for,
)
from tests.support import consume, eventually

GENERATION_DELAY_S = 1.5
RECIPIENTS = ("Kai", "Zoe")


def _start(
    settings: GeneratorSettings, workdir: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "songswipe.generator"],
            cwd=workdir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _requests_per_variant(fake: FakeElevenLabs) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for request in fake.received():
        name = next(n for n in RECIPIENTS if n in request.prompt)
        variant = next(v for v, d in VARIANT_DIRECTIONS.items() if d in request.prompt)
        counts[(name, variant)] = counts.get((name, variant), 0) + 1
    return counts


async def _complete(db: Connection) -> set[tuple[str, int]]:
    cursor = await db.execute(
        "select c.recipient_name, v.variant_number from song_variants v"
        " join orders o on o.id = v.order_id"
        " join customizations c on c.id = o.customization_id"
        " where v.status = 'complete'"
    )
    return {(r["recipient_name"], r["variant_number"]) for r in await cursor.fetchall()}


async def test_sigkill_with_work_in_flight_then_restart_completes_every_variant_once(
    db: Connection,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    tmp_path: Path,
) -> None:
    jobs = []
    for name in RECIPIENTS:
        customization, order = await order_with_variants(
            db, variants=(1, 2, 3), recipient_name=name
        )
        jobs += [job_for(customization, order, n) for n in (1, 2, 3)]
    log = tmp_path / "generator.log"

    with fake_elevenlabs(default=Reply(delay_s=GENERATION_DELAY_S)) as fake:
        settings = settings_for(
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            topics=topics,
            songs_dir=tmp_path / "songs",
            fake_url=fake.url,
            generator_concurrency=3,
        )
        first = _start(settings, tmp_path, log)
        try:
            await publish_all(kafka_bootstrap, topics.generate, list(jobs))

            async def some_done_and_more_in_flight() -> bool:
                return len(await _complete(db)) >= 1 and len(fake.received()) >= 4

            await eventually(
                some_done_and_more_in_flight, timeout_s=40, what="work in flight"
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        done_before_kill = await _complete(db)
        in_flight_at_kill = set(_requests_per_variant(fake)) - done_before_kill
        assert in_flight_at_kill, "the kill was meant to interrupt work"

        second = _start(settings, tmp_path, log)
        try:

            async def all_complete() -> bool:
                return len(await _complete(db)) == len(jobs)

            await eventually(all_complete, timeout_s=60, what="every variant complete")
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(timeout=20)
            except subprocess.TimeoutExpired:
                second.kill()
                raise

        requests = _requests_per_variant(fake)
        letters = await consume(
            kafka_bootstrap, topics.dlq, DeadLetter, expect=0, settle_s=0.5
        )

    assert second.returncode == 0, log.read_text()
    cursor = await db.execute("select status, storage_path from song_variants")
    rows = await cursor.fetchall()
    assert len(rows) == len(jobs)
    assert {r["status"] for r in rows} == {"complete"}
    assert all((tmp_path / "songs" / r["storage_path"]).is_file() for r in rows)
    # Finished songs were not made again; interrupted ones were made again.
    assert all(requests[variant] == 1 for variant in done_before_kill)
    assert all(requests[variant] == 2 for variant in in_flight_at_kill)
    assert letters == []
