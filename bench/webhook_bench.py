"""Benchmark the Stripe webhook against a bare FastAPI endpoint.

Starts the real ``songswipe-webhook`` (uvicorn, real Postgres and Kafka, a
database and a topic prefix of its own) and a bare FastAPI endpoint served
with the same uvicorn settings, then sends each signed
``checkout.session.completed`` events (a new Checkout session each, so every
request records an order and publishes it):

1. open loop at ``--rate`` requests/s for ``--duration`` s: p50, p99 and the
   sustained requests/s;
2. closed loop with ``--clients`` connections for ``--saturate`` s: the most
   requests/s each server answers.

Run from the repository root:

    python3 -m uv run --no-sync python bench/webhook_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvloop
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from webhook_load import RequestFactory, Run, closed_loop, open_loop

from songswipe.shared.migrate import apply_migrations
from songswipe.shared.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA_BOOTSTRAP_SERVERS,
)
from songswipe.shared.stripe_signing import signature_header
from songswipe.shared.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_bench_3e5f7a9c1b2d4e6f8a0c"
PATH = "/api/webhook"
HOST = "127.0.0.1"
CUSTOMIZATIONS = 50
TARGET_P99_MS = 25.0
TARGET_RATIO = 0.40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def create_database(admin_url: str) -> str:
    name = f"songswipe_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
        await c.execute(f'create database "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    await apply_migrations(url)
    return url


async def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
        await c.execute(f'drop database if exists "{name}" with (force)')


async def seed_customizations(url: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for _ in range(CUSTOMIZATIONS):
            cursor = await c.execute(
                "insert into customizations (user_id, recipient_name, sender_name,"
                " occasion, mood, genre) values (gen_random_uuid(), 'Maya', 'Sam',"
                " 'birthday', 'joyful', 'pop') returning user_id, id"
            )
            row = await cursor.fetchone()
            assert row is not None
            rows.append((str(row[0]), str(row[1])))
    return rows


def checkout_events(customizations: list[tuple[str, str]], run: str) -> RequestFactory:
    """Signed events, each for a new Checkout session."""

    def make(index: int) -> tuple[bytes, dict[str, str]]:
        user_id, customization_id = customizations[index % len(customizations)]
        event: dict[str, Any] = {
            "id": f"evt_bench{run}{index}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "type": "checkout.session.completed",
            "livemode": False,
            "pending_webhooks": 1,
            "data": {
                "object": {
                    "id": f"cs_bench{run}{index}",
                    "object": "checkout.session",
                    "amount_total": 1999,
                    "currency": "usd",
                    "customer_email": "maya@example.com",
                    "metadata": {
                        "userId": user_id,
                        "customizationId": customization_id,
                    },
                    "mode": "payment",
                    "payment_intent": f"pi_bench{run}{index}",
                    "payment_status": "paid",
                    "status": "complete",
                }
            },
        }
        body = json.dumps(event).encode()
        return body, {
            "Content-Type": "application/json",
            "Stripe-Signature": signature_header(body, SECRET),
        }

    return make


@contextmanager
def serve(
    command: list[str], env: dict[str, str], log: Path, port: int
) -> Iterator[None]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited; see {log}")
                try:
                    if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} not up in 60 s; see {log}")
                time.sleep(0.2)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


async def count_messages(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [name for name in existing if name.startswith(topics.prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def line(name: str, phase: str, run: Run) -> str:
    other = sum(n for status, n in run.statuses.items() if status != 200)
    text = (
        f"{name:<13} {phase:<22} {run.ok:>7} {other + run.errors:>7}"
        f" {run.percentile_ms(0.50):>8.2f} {run.percentile_ms(0.99):>8.2f}"
        f" {run.percentile_ms(1.0):>8.2f} {run.rate_per_s:>9.1f}"
    )
    if run.errors:
        text += f"  ({run.errors} connection errors)"
    return text


async def measure(args: argparse.Namespace) -> int:
    admin_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    bootstrap = os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    )
    run_id = uuid.uuid4().hex[:8]
    topics = Topics(prefix=f"bench{run_id}.")
    database_url = await create_database(admin_url)
    customizations = await seed_customizations(database_url)
    make_request = checkout_events(customizations, run_id)
    logs = Path(tempfile.mkdtemp(prefix="webhook-bench-"))

    webhook_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_HOST": HOST,
        "WEBHOOK_PORT": str(webhook_port),
        "PYTHONPATH": str(ROOT),
    }
    webhook_cmd = [sys.executable, "-m", "songswipe.webhook"]
    bare_cmd = [sys.executable, "bench/webhook_bare.py", "--port", str(bare_port)]
    targets = [
        ("bare FastAPI", bare_cmd, bare_port),
        ("webhook", webhook_cmd, webhook_port),
    ]

    results: dict[tuple[str, str], Run] = {}
    next_index = 0
    try:
        for name, command, port in targets:
            log = logs / f"{name.split()[0]}.log"
            with serve(command, env, log, port):
                print(f"{name}: warming up for {args.warmup} s", flush=True)
                await open_loop(
                    HOST,
                    port,
                    PATH,
                    make_request,
                    rate_per_s=args.rate,
                    duration_s=args.warmup,
                    first_index=next_index,
                )
                next_index += int(args.rate * args.warmup)
                print(
                    f"{name}: {args.rate:.0f} req/s for {args.duration} s", flush=True
                )
                results[(name, "open")] = await open_loop(
                    HOST,
                    port,
                    PATH,
                    make_request,
                    rate_per_s=args.rate,
                    duration_s=args.duration,
                    first_index=next_index,
                )
                next_index += int(args.rate * args.duration)
                print(
                    f"{name}: {args.clients} clients for {args.saturate} s", flush=True
                )
                saturated = await closed_loop(
                    HOST,
                    port,
                    PATH,
                    make_request,
                    clients=args.clients,
                    duration_s=args.saturate,
                    first_index=next_index,
                )
                results[(name, "closed")] = saturated
                next_index += saturated.ok + saturated.errors + 10_000

        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cursor = await conn.execute(
                "select count(*), count(published_at) from orders"
            )
            orders, published = await cursor.fetchone() or (0, 0)
        messages = await count_messages(bootstrap, topics.requested)
    finally:
        await drop_database(admin_url, database_url)
        try:
            await delete_topics(bootstrap, topics)
        except KafkaError as exc:
            print(f"topics {topics.prefix}* left on the broker: {exc}")

    open_phase = f"open {args.rate:.0f}/s x {args.duration:.0f} s"
    closed_phase = f"closed {args.clients} x {args.saturate:.0f} s"
    print()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; logs in {logs}")
    print(
        f"{'target':<13} {'phase':<22} {'200s':>7} {'not 200':>7}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>9}"
    )
    for name, _, _ in targets:
        print(line(name, open_phase, results[(name, "open")]))
    for name, _, _ in targets:
        print(line(name, closed_phase, results[(name, "closed")]))

    webhook_open = results[("webhook", "open")]
    bare_open = results[("bare FastAPI", "open")]
    webhook_max = results[("webhook", "closed")]
    bare_max = results[("bare FastAPI", "closed")]
    open_ratio = webhook_open.rate_per_s / bare_open.rate_per_s
    max_ratio = webhook_max.rate_per_s / bare_max.rate_per_s
    p99 = webhook_open.percentile_ms(0.99)
    print()
    print(f"ratio webhook/bare, sustained req/s at {args.rate:.0f}/s: {open_ratio:.2f}")
    print(f"ratio webhook/bare, saturated req/s:        {max_ratio:.2f}")
    print(
        f"target p99 <= {TARGET_P99_MS:.0f} ms at {args.rate:.0f} req/s:"
        f" {'met' if p99 <= TARGET_P99_MS else 'MISSED'} ({p99:.2f} ms)"
    )
    print(
        f"target >= {TARGET_RATIO:.0%} of bare req/s at {args.rate:.0f} req/s:"
        f" {'met' if open_ratio >= TARGET_RATIO else 'MISSED'} ({open_ratio:.0%});"
        f" saturated, for reference: {max_ratio:.0%}"
    )
    print(
        f"orders recorded: {orders}, handed on: {published}, left paid for the"
        f" sweep (their deliveries got 503): {orders - published},"
        f" generation.requested messages: {messages}"
    )
    # An order marked as handed on without its message would be a lost order.
    intact = messages >= published
    print(f"every handed-on order has its message: {'yes' if intact else 'NO'}")
    return 0 if intact else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds")
    parser.add_argument("--clients", type=int, default=32, help="closed loop")
    parser.add_argument("--saturate", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    sys.exit(uvloop.run(measure(args)))


if __name__ == "__main__":
    main()
