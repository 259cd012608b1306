"""Webhook-to-``completed`` latency and sustained orders/s of the whole pipeline.

The four services run as separate processes, as ``make run`` starts them,
against the real Kafka and Postgres, with the generator's instant provider
(a tiny precomputed MP3), so what is measured is the pipeline itself. For
the same reason the songs go to a folder in memory (/dev/shm) where there is
one: in production they go to Supabase Storage, and the figure should not
hang on how busy this machine's disk is (``--songs-dir`` puts them there).
Beside it, in the same run, the floor: four aiokafka produce-consume hops
that do no work, with the same number of messages.

    python3 -m uv run --no-sync python bench/pipeline_bench.py

Phases: signed ``checkout.session.completed`` events at 20 orders/s for 30 s
(latency from the POST to the order's ``completed`` time in the database),
then a saturation run (orders sent as fast as the webhook takes them; the
sustained rate is orders completed over the time from the first POST to the
last completion; 4000 orders, about 20 s at the rates seen here). The floor
repeats both with messages instead of orders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import uvloop
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from webhook_load import Connections

from songswipe.cli.demo import checkout_completed_event
from songswipe.cli.supervisor import SERVICES, Supervisor
from songswipe.shared.db import Connection, connect
from songswipe.shared.kafka import ensure_topics, make_consumer, make_producer
from songswipe.shared.migrate import apply_migrations
from songswipe.shared.settings import ServiceSettings
from songswipe.shared.stripe_signing import signature_header
from songswipe.shared.topics import Topics, TopicSpec
from songswipe.webhook.app import WEBHOOK_PATH

SECRET = "whsec_bench_secret"
PARTITIONS = 6
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 300.0
SEND_CONCURRENCY = 64
FLOOR_HOPS = 4

TARGET_P50_MS = 150.0
TARGET_P99_MS = 500.0
TARGET_ORDERS_PER_S = 200.0


@dataclass(frozen=True)
class Figures:
    count: int
    p50_ms: float
    p99_ms: float
    per_s: float

    def line(self, unit: str) -> str:
        return (
            f"p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms"
            f"  ({self.count} {unit}, {self.per_s:6.1f} {unit}/s)"
        )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def figures(latencies_s: list[float], span_s: float) -> Figures:
    latencies_ms = [1000 * x for x in latencies_s]
    return Figures(
        count=len(latencies_ms),
        p50_ms=statistics.median(latencies_ms),
        p99_ms=percentile(latencies_ms, 0.99),
        per_s=len(latencies_ms) / span_s if span_s > 0 else 0.0,
    )


async def open_loop(
    count: int, rate_per_s: float | None, send: Callable[[int], Awaitable[None]]
) -> None:
    """Call ``send(i)`` ``count`` times at ``rate_per_s``, or as fast as allowed."""
    gate = asyncio.Semaphore(SEND_CONCURRENCY)
    started = time.monotonic()

    async def one(index: int) -> None:
        async with gate:
            await send(index)

    tasks = []
    for index in range(count):
        if rate_per_s is not None:
            delay_s = started + index / rate_per_s - time.monotonic()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
        else:
            await gate.acquire()
            gate.release()
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------- pipeline


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own on ``server_url``'s server, migrated, dropped after."""
    name = f"songswipe_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as a:
        await a.execute(f'create database "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await apply_migrations(url)
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(
            server_url, autocommit=True
        ) as admin:
            await admin.execute(f'drop database if exists "{name}" with (force)')


async def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


@asynccontextmanager
async def services(
    workdir: Path, env: dict[str, str], webhook_url: str
) -> AsyncIterator[Supervisor]:
    environment = {service: dict(env) for service in SERVICES}
    supervisor = Supervisor(
        log_dir=workdir / "logs",
        run_dir=workdir / "run",
        environment=environment,
        cwd=workdir,
    )
    supervisor.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                supervisor.check_alive()
                try:
                    if (await client.get(f"{webhook_url}/readyz")).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the webhook did not become ready")
                await asyncio.sleep(0.2)
        yield supervisor
    finally:
        supervisor.stop(timeout_s=30)


async def customizations(conn: Connection, count: int) -> list[tuple[Any, Any]]:
    """``count`` customizations as (user_id, customization_id), in one statement."""
    cursor = await conn.execute(
        "insert into customizations (user_id, recipient_name, sender_name,"
        " occasion, mood, genre, song_length_seconds)"
        " select gen_random_uuid(), 'Maya', 'Sam', 'birthday', 'joyful', 'pop', 10"
        " from generate_series(1, %s) returning user_id, id",
        (count,),
    )
    return [(row["user_id"], row["id"]) for row in await cursor.fetchall()]


async def post_event(
    connections: Connections, body: bytes, headers: dict[str, str]
) -> int:
    """POST one event; once more on a fresh connection if the server closed
    the one taken (the webhook is idempotent per event id)."""
    for attempt in (1, 2):
        connection = connections.take()
        try:
            status = await connection.post(WEBHOOK_PATH, body, headers)
        except (OSError, asyncio.IncompleteReadError):
            connection.close()
            if attempt == 2:
                raise
            continue
        connections.give_back(connection)
        return status
    raise AssertionError("unreachable")


async def completed_orders(conn: Connection) -> int:
    cursor = await conn.execute(
        "select count(*) as n from orders where status = 'completed'"
    )
    row = await cursor.fetchone()
    return int(row["n"]) if row is not None else 0


async def pipeline_phase(
    conn: Connection,
    connections: Connections,
    *,
    count: int,
    rate_per_s: float | None,
    check_alive: Callable[[], None],
    sent_at: dict[str, float] | None = None,
) -> Figures:
    """Send ``count`` paid orders; return latency to ``completed`` and orders/s.

    ``sent_at`` receives when each order's event was posted, by session id.
    """
    completed_before = await completed_orders(conn)
    rows = await customizations(conn, count)
    sessions = [f"cs_bench_{uuid.uuid4().hex}" for _ in rows]
    # Signed ahead (well inside Stripe's 300 s tolerance), so the load
    # generator spends its CPU on sending, not on building events.
    requests = [
        signed_event(session, user_id, customization_id)
        for session, (user_id, customization_id) in zip(sessions, rows, strict=True)
    ]
    if sent_at is None:
        sent_at = {}
    refused: list[int] = []

    async def send(index: int) -> None:
        sent_at[sessions[index]] = time.time()
        status = await post_event(connections, *requests[index])
        if status != 200:
            refused.append(status)

    await open_loop(count, rate_per_s, send)
    if refused:
        raise RuntimeError(f"the webhook refused {len(refused)} orders: {refused[:5]}")

    # Polled with a count over the bench's own database (cheap), so the load
    # generator's watching costs the machine little; the times are read once.
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (completed := await completed_orders(conn) - completed_before) < count:
        check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {completed} of {count} orders completed")
        await asyncio.sleep(0.5)
    cursor = await conn.execute(
        "select stripe_session_id, extract(epoch from updated_at) as done_s"
        " from orders where stripe_session_id = any(%s) and status = 'completed'",
        (sessions,),
    )
    done = {
        row["stripe_session_id"]: float(row["done_s"])
        for row in await cursor.fetchall()
    }

    latencies_s = [done[s] - sent_at[s] for s in sessions]
    span_s = max(done.values()) - min(sent_at.values())
    return figures(latencies_s, span_s)


def signed_event(
    session_id: str, user_id: Any, customization_id: Any
) -> tuple[bytes, dict[str, str]]:
    event = checkout_completed_event(
        session_id=session_id, user_id=user_id, customization_id=customization_id
    )
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": signature_header(body, SECRET),
    }
    return body, headers


STAGES = (
    ("webhook: POST to order row", "sent", "created"),
    ("orchestrator: order row to variant rows", "created", "fanned_out"),
    ("hop to generator: variant rows to first start", "fanned_out", "started"),
    ("generator: first start to last variant done", "started", "generated"),
    ("settle: last variant done to completed", "generated", "done"),
)


async def stage_breakdown(
    conn: Connection, sent_at: dict[str, float]
) -> list[tuple[str, float, float]]:
    """Where the time goes, from the rows' own timestamps: (stage, p50, p99) ms."""
    cursor = await conn.execute(
        "select o.stripe_session_id as session,"
        " extract(epoch from o.created_at) as created,"
        " extract(epoch from min(v.created_at)) as fanned_out,"
        " extract(epoch from min(v.started_at)) as started,"
        " extract(epoch from max(v.completed_at)) as generated,"
        " extract(epoch from o.updated_at) as done"
        " from orders o join song_variants v on v.order_id = o.id"
        " where o.stripe_session_id = any(%s) and o.status = 'completed'"
        " group by o.id",
        (list(sent_at),),
    )
    rows = [
        {
            **{k: float(v) for k, v in row.items() if k != "session"},
            "sent": sent_at[row["session"]],
        }
        for row in await cursor.fetchall()
    ]
    breakdown = []
    for name, start, end in STAGES:
        spans_ms = [1000 * (row[end] - row[start]) for row in rows]
        breakdown.append(
            (name, statistics.median(spans_ms), percentile(spans_ms, 0.99))
        )
    return breakdown


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far; all of
    PostgreSQL's processes count as one."""
    used = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used[name] = times.user + times.system
    used["postgres"] = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if (process.info["name"] or "").startswith("postgres"):
            times = process.info["cpu_times"]
            if times is not None:
                used["postgres"] += times.user + times.system
    return used


def process_ids(supervisor: Supervisor) -> dict[str, int]:
    pids = {p.service: p.process.pid for p in supervisor.processes}
    kafka_pid_file = Path(".local/run/kafka.pid")
    if kafka_pid_file.exists():
        pids["kafka broker"] = int(kafka_pid_file.read_text().strip())
    pids["load (bench)"] = os.getpid()
    return pids


# ---------------------------------------------------------------- floor


async def relay(bootstrap: str, source: str, target: str, group: str) -> None:
    """Consume ``source`` and produce each message to ``target``, commit after."""
    consumer = make_consumer(bootstrap, source, group_id=group, client_id=group)
    producer = make_producer(bootstrap, client_id=group)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                await asyncio.gather(
                    *(
                        producer.send_and_wait(target, r.value, key=r.key)
                        for r in records
                    )
                )
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def floor_phase(
    bootstrap: str, topics: list[str], *, count: int, rate_per_s: float | None
) -> Figures:
    """``count`` messages through ``FLOOR_HOPS`` hops; latency and messages/s."""
    producer = make_producer(bootstrap, client_id="bench-floor-source")
    sink = AIOKafkaConsumer(
        topics[-1],
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    await producer.start()
    await sink.start()
    await sink.seek_to_end()
    sent_at: dict[str, float] = {}
    arrived: dict[str, float] = {}

    async def collect() -> None:
        while len(arrived) < count:
            batches = await sink.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for record in records:
                    arrived[json.loads(record.value)["id"]] = now

    async def send(index: int) -> None:
        message_id = uuid.uuid4().hex
        body = json.dumps({"id": message_id, "pad": "x" * 300}).encode()
        sent_at[message_id] = time.time()
        await producer.send_and_wait(topics[0], body, key=message_id.encode())

    collector = asyncio.create_task(collect())
    try:
        await open_loop(count, rate_per_s, send)
        await asyncio.wait_for(collector, timeout=DRAIN_TIMEOUT_S)
    finally:
        collector.cancel()
        await producer.stop()
        await sink.stop()

    latencies_s = [arrived[m] - sent_at[m] for m in sent_at]
    return figures(latencies_s, max(arrived.values()) - min(sent_at.values()))


@asynccontextmanager
async def floor_relays(bootstrap: str, prefix: str) -> AsyncIterator[list[str]]:
    topics = [f"{prefix}floor-{hop}" for hop in range(FLOOR_HOPS + 1)]
    await ensure_topics(bootstrap, [TopicSpec(name, PARTITIONS) for name in topics])
    tasks = [
        asyncio.create_task(
            relay(bootstrap, topics[hop], topics[hop + 1], f"{prefix}floor-relay-{hop}")
        )
        for hop in range(FLOOR_HOPS)
    ]
    try:
        # The relays join their groups and settle, as the services did.
        await floor_phase(bootstrap, topics, count=100, rate_per_s=50)
        yield topics
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------- main


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def songs_parent(choice: str | None) -> Path | None:
    """Where the songs' folder goes: ``--songs-dir``, else memory when the
    machine has a tmpfs at /dev/shm, else the temporary folder."""
    if choice is not None:
        return Path(choice)
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


async def main(
    rate_per_s: float,
    duration_s: float,
    saturation_count: int,
    songs_under: Path | None,
    overrides: dict[str, str],
) -> None:
    base = ServiceSettings()
    bootstrap = base.kafka_bootstrap_servers
    prefix = f"pipebench{uuid.uuid4().hex[:8]}."
    latency_count = round(rate_per_s * duration_s)
    webhook_port = 18000 + uuid.uuid4().int % 1000
    webhook_url = f"http://127.0.0.1:{webhook_port}"

    async with scratch_database(base.database_url) as database_url:
        with (
            tempfile.TemporaryDirectory(prefix="songswipe-bench-") as tmp,
            tempfile.TemporaryDirectory(
                prefix="songswipe-bench-songs-", dir=songs_under
            ) as songs,
        ):
            workdir = Path(tmp)
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "DATABASE_URL": database_url,
                "KAFKA_TOPIC_PREFIX": prefix,
                "KAFKA_PARTITIONS": str(PARTITIONS),
                "WEBHOOK_HOST": "127.0.0.1",
                "WEBHOOK_PORT": str(webhook_port),
                "STRIPE_WEBHOOK_SECRET": SECRET,
                "GENERATOR_PROVIDER": "instant",
                "GENERATOR_CONCURRENCY": "64",
                "ELEVENLABS_API_KEY": "",
                "SONGS_DIR": songs,
                "ORCHESTRATOR_DATA_DIR": str(workdir / "orchestrator"),
                "METRICS_PORT": "0",
                "LOG_LEVEL": "WARNING",
                **overrides,
            }
            await ensure_topics(bootstrap, Topics(prefix).specs(PARTITIONS))
            print(f"Starting the four services (logs in {workdir / 'logs'}) ...")
            print(f"Songs are written to {songs}")
            conn = await connect(database_url)
            try:
                connections = Connections("127.0.0.1", webhook_port)
                async with services(workdir, env, webhook_url) as supervisor:
                    print("Warm-up: 20 orders")
                    await pipeline_phase(
                        conn,
                        connections,
                        count=20,
                        rate_per_s=20,
                        check_alive=supervisor.check_alive,
                    )
                    print(f"Latency: {rate_per_s:g} orders/s for {duration_s:g} s")
                    paced_sent: dict[str, float] = {}
                    paced = await pipeline_phase(
                        conn,
                        connections,
                        count=latency_count,
                        rate_per_s=rate_per_s,
                        check_alive=supervisor.check_alive,
                        sent_at=paced_sent,
                    )
                    breakdown = await stage_breakdown(conn, paced_sent)
                    pids = process_ids(supervisor)
                    cpu_before = cpu_seconds(pids)
                    saturation_started = time.monotonic()
                    print(f"Saturation: {saturation_count} orders, as fast as taken")
                    saturated = await pipeline_phase(
                        conn,
                        connections,
                        count=saturation_count,
                        rate_per_s=None,
                        check_alive=supervisor.check_alive,
                    )
                    saturation_s = time.monotonic() - saturation_started
                    cpu_after = cpu_seconds(pids)
                connections.close()
            finally:
                await conn.close()

    print("Floor: four aiokafka hops, no work")
    async with floor_relays(bootstrap, prefix) as floor_topics:
        floor_paced = await floor_phase(
            bootstrap, floor_topics, count=latency_count, rate_per_s=rate_per_s
        )
        floor_saturated = await floor_phase(
            bootstrap, floor_topics, count=saturation_count, rate_per_s=None
        )
    await delete_topics(bootstrap, prefix)

    print()
    print(f"webhook -> completed at {rate_per_s:g} orders/s for {duration_s:g} s")
    print(f"  pipeline  {paced.line('orders')}")
    print(f"  floor     {floor_paced.line('msgs')}")
    print(
        f"  ratio     p50 x{paced.p50_ms / floor_paced.p50_ms:.1f}"
        f"  p99 x{paced.p99_ms / floor_paced.p99_ms:.1f}"
    )
    print("  where the time goes (p50 / p99 per stage)")
    for name, p50_ms, p99_ms in breakdown:
        print(f"    {name:<48} {p50_ms:7.1f} ms / {p99_ms:7.1f} ms")
    print("sustained (saturation run)")
    print(f"  pipeline  {saturated.per_s:7.1f} orders/s")
    print(f"  floor     {floor_saturated.per_s:7.1f} msgs/s")
    print(f"  ratio     {saturated.per_s / floor_saturated.per_s:.2f} of the floor")
    cores = os.cpu_count()
    print(f"  CPU used during the saturation run ({saturation_s:.1f} s, {cores} cores)")
    used_s = {
        name: after - cpu_before.get(name, 0.0) for name, after in cpu_after.items()
    }
    for name, seconds in sorted(used_s.items(), key=lambda item: -item[1]):
        print(
            f"    {name:<13} {100 * seconds / saturation_s:5.0f} % of a core"
            f"  {1000 * seconds / saturation_count:5.2f} ms per order"
        )
    total_s = sum(used_s.values())
    print(
        f"    {'all':<13} {100 * total_s / saturation_s:5.0f} % of a core"
        f"  {1000 * total_s / saturation_count:5.2f} ms per order"
    )
    print("targets")
    print(f"  p50 <= {TARGET_P50_MS:g} ms: {verdict(paced.p50_ms <= TARGET_P50_MS)}")
    print(f"  p99 <= {TARGET_P99_MS:g} ms: {verdict(paced.p99_ms <= TARGET_P99_MS)}")
    print(
        f"  >= {TARGET_ORDERS_PER_S:g} orders/s:"
        f" {verdict(saturated.per_s >= TARGET_ORDERS_PER_S)}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="orders/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--saturation", type=int, default=4000, help="orders")
    parser.add_argument(
        "--songs-dir",
        default=None,
        help="folder for the songs' folder (default: /dev/shm when it exists)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the four services, e.g. ORCHESTRATOR_KAFKA_LINGER_MS=20",
    )
    args = parser.parse_args()
    overrides: dict[str, str] = {}
    for setting in args.set:
        name, equals, value = setting.partition("=")
        if not name or not equals:
            parser.error(f"--set takes NAME=VALUE, not {setting!r}")
        overrides[name] = value
    try:
        uvloop.run(
            main(
                args.rate,
                args.duration,
                args.saturation,
                songs_parent(args.songs_dir),
                overrides,
            )
        )
    except KeyboardInterrupt:
        sys.exit(130)
