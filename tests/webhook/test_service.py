"""Health, readiness, metrics, settings and the real `songswipe-webhook` process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from songswipe.shared.db import Connection
from songswipe.shared.settings import ServiceSettings
from songswipe.shared.topics import Topics
from songswipe.webhook.settings import DEV_WEBHOOK_SECRET, WebhookSettings
from tests.support import insert_customization
from tests.webhook.helpers import (
    SECRET,
    WEBHOOK_PATH,
    checkout_session,
    deliver,
    signed_headers,
    stripe_event,
    topic_size,
)


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "database": True, "kafka": True}


async def test_metrics_count_outcomes_orders_and_duplicates(
    client: httpx.AsyncClient, db: Connection
) -> None:
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))
    await deliver(client, event)
    await deliver(client, event)
    await deliver(client, event, secret="whsec_wrong")

    text = (await client.get("/metrics")).text

    assert 'songswipe_webhook_requests_total{outcome="order_recorded"} 1.0' in text
    assert 'songswipe_webhook_requests_total{outcome="duplicate"} 1.0' in text
    assert 'songswipe_webhook_requests_total{outcome="rejected"} 1.0' in text
    assert "songswipe_webhook_orders_recorded_total 1.0" in text
    assert 'songswipe_webhook_duplicates_total{kind="event"} 1.0' in text
    assert "songswipe_webhook_request_duration_seconds_count 3.0" in text


def test_production_refuses_the_placeholder_secret() -> None:
    with pytest.raises(ValidationError, match="STRIPE_WEBHOOK_SECRET"):
        WebhookSettings(environment="production")
    with pytest.raises(ValidationError, match="STRIPE_API_KEY"):
        WebhookSettings(
            environment="production",
            stripe_webhook_secret="whsec_live_0a1b2c",
            stripe_api_key="sk_changeme",
        )

    development = WebhookSettings(environment="development")
    production = WebhookSettings(
        environment="production", stripe_webhook_secret="whsec_live_0a1b2c"
    )

    assert development.stripe_webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET
    assert development.uses_placeholder_secret
    assert not production.uses_placeholder_secret
    assert production.webhook_host == "127.0.0.1"
    assert production.webhook_port == 8000
    assert "whsec_live_0a1b2c" not in repr(production)


def test_the_sweep_may_not_race_a_delivery_still_publishing() -> None:
    with pytest.raises(ValidationError, match="WEBHOOK_SWEEP_AFTER_S"):
        WebhookSettings(webhook_publish_timeout_s=5, webhook_sweep_after_s=5)

    assert WebhookSettings(
        webhook_publish_timeout_s=5, webhook_sweep_after_s=0, webhook_sweep_interval_s=0
    )


def test_every_setting_is_documented_in_env_example() -> None:
    example = Path(".env.example").read_text(encoding="utf-8")
    section = example.split("# --- webhook ---", 1)
    assert len(section) == 2, ".env.example has no webhook section"
    documented = {
        line.split("=", 1)[0].strip("# ")
        for line in section[1].splitlines()
        if "=" in line and not line.startswith("# ---")
    }
    own = set(WebhookSettings.model_fields) - set(ServiceSettings.model_fields)
    assert {name.upper() for name in own} <= documented


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def webhook_process(
    database_url: str, kafka_bootstrap: str, topics: Topics
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    executable = shutil.which("songswipe-webhook") or os.path.join(
        os.path.dirname(sys.executable), "songswipe-webhook"
    )
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_PARTITIONS": "3",
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(port),
    }
    process = subprocess.Popen(
        [executable], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("songswipe-webhook did not become ready in 30 s")
        yield process, base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)


async def test_the_installed_command_serves_stripe_and_stops_cleanly(
    webhook_process: tuple[subprocess.Popen[bytes], str],
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
) -> None:
    process, base_url = webhook_process
    customization = await insert_customization(db)
    event = stripe_event(checkout_session(customization))

    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await deliver(client, event)
        oversized = await client.post(
            WEBHOOK_PATH,
            content=b"x" * (1024 * 1024 + 1),
            headers=signed_headers(b"x"),
        )

    process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once the graceful shutdown is done.
    assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    logs = process.stdout.read().decode()  # type: ignore[union-attr]
    print(logs)
    assert "Application shutdown complete" in logs
    assert response.status_code == 200, logs
    assert response.json()["outcome"] == "order_recorded"
    assert oversized.status_code == 413
    assert await topic_size(kafka_bootstrap, topics.requested) == 1
    assert f"event_id={event['id']}" in logs
    assert SECRET not in logs


def test_the_command_refuses_to_start_with_a_placeholder_in_production() -> None:
    executable = shutil.which("songswipe-webhook") or os.path.join(
        os.path.dirname(sys.executable), "songswipe-webhook"
    )
    env = {**os.environ, "ENVIRONMENT": "production", "STRIPE_WEBHOOK_SECRET": ""}

    finished = subprocess.run(
        [executable], env=env, capture_output=True, timeout=60, check=False
    )

    assert finished.returncode == 2
    assert b"STRIPE_WEBHOOK_SECRET" in finished.stderr
