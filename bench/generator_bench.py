"""Generator throughput: variants against a fake ElevenLabs that answers in 2 s.

One generator process (``python -m songswipe.generator``) with
``GENERATOR_CONCURRENCY=100`` works through 300 variants on the real Kafka
and Postgres; beside it, in the same run, the baseline: the same work with
concurrency 1 (what one prefork worker does), measured on a few variants and
scaled up to the same count.

    python3 -m uv run --no-sync python bench/generator_bench.py

Wall time runs from the first message published to the last
``variant.completed`` read back; peak RSS is the generator process's, sampled
with psutil from its start. Each run has its own database and topic prefix,
dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from songswipe.shared.db import connect  # noqa: E402
from songswipe.shared.kafka import ensure_topics, make_producer  # noqa: E402
from songswipe.shared.messages import (  # noqa: E402
    SongBrief,
    VariantCompleted,
    VariantGenerate,
)
from songswipe.shared.migrate import apply_migrations  # noqa: E402
from songswipe.shared.settings import ServiceSettings  # noqa: E402
from songswipe.shared.topics import Topics  # noqa: E402
from tests.generator.fake_elevenlabs import Reply, fake_elevenlabs  # noqa: E402

PARTITIONS = 6
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 900.0
RSS_SAMPLE_INTERVAL_S = 0.02
TARGET_WALL_S = 8.0
TARGET_RSS_MB = 250.0
BRIEF = SongBrief(
    recipient_name="Maya",
    sender_name="Sam",
    occasion="birthday",
    mood="joyful",
    genre="pop",
    length_s=30,
)


@dataclass(frozen=True)
class RunResult:
    variants: int
    concurrency: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float

    @property
    def per_variant_s(self) -> float:
        return self.wall_s / self.variants


@asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one run, dropped afterwards."""
    name = f"songswipe_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
        await c.execute(f'create database "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await apply_migrations(url)
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(
            admin_url, autocommit=True
        ) as c:
            await c.execute(f'drop database if exists "{name}" with (force)')


async def insert_work(database_url: str, count: int) -> list[VariantGenerate]:
    """Orders of three pending variants each, ``count`` variants in all."""
    jobs: list[VariantGenerate] = []
    conn = await connect(database_url)
    try:
        for first in range(0, count, 3):
            user_id = uuid.uuid4()
            cursor = await conn.execute(
                "insert into customizations (user_id, recipient_name, sender_name,"
                " occasion, mood, genre, song_length_seconds)"
                " values (%s, 'Maya', 'Sam', 'birthday', 'joyful', 'pop', 30)"
                " returning id",
                (user_id,),
            )
            customization = await cursor.fetchone()
            assert customization is not None
            cursor = await conn.execute(
                "insert into orders (user_id, customization_id, stripe_session_id,"
                " status) values (%s, %s, %s, 'generating') returning id",
                (user_id, customization["id"], f"cs_bench_{uuid.uuid4().hex}"),
            )
            order = await cursor.fetchone()
            assert order is not None
            for number in range(1, min(3, count - first) + 1):
                await conn.execute(
                    "insert into song_variants (order_id, variant_number)"
                    " values (%s, %s)",
                    (order["id"], number),
                )
                jobs.append(
                    VariantGenerate(
                        order_id=order["id"],
                        user_id=user_id,
                        variant_number=number,
                        brief=BRIEF,
                    )
                )
    finally:
        await conn.close()
    return jobs


class PeakRss:
    """Samples a process's resident memory (keeps the peak) and CPU time."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.cpu_s = 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._process.memory_info().rss
                times = self._process.cpu_times()
                self.cpu_s = times.user + times.system
            except psutil.NoSuchProcess:
                return
            self.peak_bytes = max(self.peak_bytes, rss)
            time.sleep(RSS_SAMPLE_INTERVAL_S)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / 1024 / 1024


def start_generator(env: dict[str, str], workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "songswipe.generator"],
        cwd=workdir,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_ready(process: subprocess.Popen[str]) -> threading.Event:
    """Read the generator's log until it owns partitions; keep draining it."""
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Assigned" in line and "partition" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_S):
        process.kill()
        raise SystemExit("generator never became ready:\n" + "".join(lines[-30:]))
    return ready


async def await_completions(
    bootstrap: str, topic: str, expected: int, deadline: float
) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[tuple[Any, int]] = set()
    try:
        while len(seen) < expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(seen)}/{expected} variants completed")
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    done = VariantCompleted.from_bytes(record.value)
                    if done.status != "complete":
                        raise SystemExit(f"a variant failed: {done.error}")
                    seen.add((done.order_id, done.variant_number))
    finally:
        await consumer.stop()


async def run(
    *,
    variants: int,
    concurrency: int,
    fake_url: str,
    bootstrap: str,
    admin_database_url: str,
) -> RunResult:
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(bootstrap, topics.specs(PARTITIONS))
    try:
        return await _run_on(
            topics,
            variants=variants,
            concurrency=concurrency,
            fake_url=fake_url,
            bootstrap=bootstrap,
            admin_database_url=admin_database_url,
        )
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([spec.name for spec in topics.specs(1)])
        finally:
            await admin.close()


async def _run_on(
    topics: Topics,
    *,
    variants: int,
    concurrency: int,
    fake_url: str,
    bootstrap: str,
    admin_database_url: str,
) -> RunResult:
    async with scratch_database(admin_database_url) as database_url:
        jobs = await insert_work(database_url, variants)
        with tempfile.TemporaryDirectory() as workdir:
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC_PREFIX": topics.prefix,
                "KAFKA_PARTITIONS": str(PARTITIONS),
                "DATABASE_URL": database_url,
                "GENERATOR_PROVIDER": "elevenlabs",
                "ELEVENLABS_API_KEY": "bench-key",
                "ELEVENLABS_BASE_URL": fake_url,
                "GENERATOR_CONCURRENCY": str(concurrency),
                "SONGS_DIR": str(Path(workdir) / "songs"),
                "METRICS_PORT": "0",
                "LOG_LEVEL": "INFO",
            }
            process = start_generator(env, Path(workdir))
            rss = PeakRss(process.pid)
            try:
                wait_until_ready(process)
                producer = make_producer(bootstrap, client_id="generator-bench")
                await producer.start()
                started = time.monotonic()
                try:
                    await asyncio.gather(
                        *(
                            producer.send_and_wait(
                                topics.generate, job.to_bytes(), key=job.key
                            )
                            for job in jobs
                        )
                    )
                finally:
                    await producer.stop()
                await await_completions(
                    bootstrap,
                    topics.completed,
                    len(jobs),
                    deadline=started + RUN_TIMEOUT_S,
                )
                wall_s = time.monotonic() - started
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                peak_rss_mb = rss.stop()
    return RunResult(len(jobs), concurrency, wall_s, peak_rss_mb, rss.cpu_s)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--baseline-variants", type=int, default=5)
    parser.add_argument("--delay-s", type=float, default=2.0)
    args = parser.parse_args()
    shared = ServiceSettings(_env_file=None)

    with fake_elevenlabs(default=Reply(delay_s=args.delay_s)) as fake:
        common = {
            "fake_url": fake.url,
            "bootstrap": shared.kafka_bootstrap_servers,
            "admin_database_url": shared.database_url,
        }
        baseline = await run(variants=args.baseline_variants, concurrency=1, **common)
        measured = await run(
            variants=args.variants, concurrency=args.concurrency, **common
        )

    scaled_baseline_s = baseline.per_variant_s * measured.variants
    print(f"fake ElevenLabs latency: {args.delay_s:.1f} s per generation")
    print(
        f"baseline  concurrency=1: {baseline.variants} variants in"
        f" {baseline.wall_s:.2f} s ({baseline.per_variant_s:.3f} s/variant),"
        f" peak RSS {baseline.peak_rss_mb:.0f} MB;"
        f" scaled to {measured.variants} variants: {scaled_baseline_s:.1f} s"
    )
    print(
        f"generator concurrency={measured.concurrency}: {measured.variants} variants"
        f" in {measured.wall_s:.2f} s"
        f" ({measured.variants / measured.wall_s:.1f} variants/s),"
        f" peak RSS {measured.peak_rss_mb:.0f} MB, generator CPU {measured.cpu_s:.1f} s"
    )
    print(f"speed-up vs scaled baseline: {scaled_baseline_s / measured.wall_s:.1f}x")
    wall_ok = measured.wall_s <= TARGET_WALL_S
    rss_ok = measured.peak_rss_mb <= TARGET_RSS_MB
    print(
        f"targets: wall <= {TARGET_WALL_S:.0f} s {'met' if wall_ok else 'MISSED'},"
        f" RSS <= {TARGET_RSS_MB:.0f} MB {'met' if rss_ok else 'MISSED'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
