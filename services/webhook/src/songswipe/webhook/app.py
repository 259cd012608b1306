"""The FastAPI app: ``POST /api/webhook``, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from songswipe.shared.db import Pool, open_pool
from songswipe.shared.errors import DatabaseUnavailable, KafkaUnavailable
from songswipe.shared.kafka import ensure_topics, make_producer
from songswipe.webhook.db import pooled
from songswipe.webhook.errors import Rejected
from songswipe.webhook.events import StripeEvent
from songswipe.webhook.handler import WebhookHandler
from songswipe.webhook.ingress import (
    INVALID_SIGNATURE,
    SIGNATURE_HEADER,
    parse_event,
    read_body,
    verify_signature,
)
from songswipe.webhook.metrics import WebhookMetrics
from songswipe.webhook.settings import WebhookSettings
from songswipe.webhook.sweep import SweepPolicy, run_sweeper

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/webhook"
CLIENT_ID = "songswipe-webhook"
READINESS_TIMEOUT_S = 2.0


@dataclass
class Runtime:
    """What the lifespan opens once and every request shares."""

    pool: Pool
    producer: AIOKafkaProducer
    handler: WebhookHandler
    sweep_policy: SweepPolicy


def sweep_policy(settings: WebhookSettings) -> SweepPolicy:
    return SweepPolicy(
        after_s=settings.webhook_sweep_after_s,
        republish_after_s=settings.webhook_sweep_republish_after_s,
        batch_size=settings.webhook_sweep_batch_size,
        publish_timeout_s=settings.webhook_publish_timeout_s,
    )


@asynccontextmanager
async def open_runtime(
    settings: WebhookSettings, metrics: WebhookMetrics
) -> AsyncIterator[Runtime]:
    """Topics, the pool, the producer and the sweeper, closed in reverse."""
    topics = settings.topics
    await ensure_topics(
        settings.kafka_bootstrap_servers, topics.specs(settings.kafka_partitions)
    )
    pool = await open_pool(
        settings.database_url,
        max_size=settings.database_pool_max_size,
        timeout_s=settings.webhook_database_timeout_s,
    )
    producer = make_producer(
        settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        linger_ms=settings.webhook_kafka_linger_ms,
    )
    sweeper: asyncio.Task[None] | None = None
    try:
        try:
            await producer.start()
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"cannot reach Kafka at {settings.kafka_bootstrap_servers}"
            ) from exc
        handler = WebhookHandler(
            pool,
            producer,
            topics,
            metrics,
            publish_timeout_s=settings.webhook_publish_timeout_s,
        )
        runtime = Runtime(pool, producer, handler, sweep_policy(settings))
        if settings.webhook_sweep_interval_s > 0:
            sweeper = asyncio.create_task(
                run_sweeper(
                    pool,
                    producer,
                    topics,
                    runtime.sweep_policy,
                    metrics,
                    interval_s=settings.webhook_sweep_interval_s,
                ),
                name="webhook-sweeper",
            )
        logger.info("Webhook ready on %s topic=%s", WEBHOOK_PATH, topics.requested)
        yield runtime
    finally:
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await producer.stop()
        await pool.close()


def create_app(settings: WebhookSettings) -> FastAPI:
    """The webhook app; its lifespan connects to Postgres and Kafka."""
    metrics = WebhookMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, metrics) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="SongSwipe webhook",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    secret = settings.stripe_webhook_secret.get_secret_value()

    @app.post(WEBHOOK_PATH)
    async def stripe_webhook(request: Request) -> Response:
        started = time.perf_counter()
        status, answer, outcome = await _deliver(request, settings, secret)
        metrics.requests.labels(outcome=outcome).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(answer, status_code=status)

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        checks = {
            "database": await _database_ready(runtime.pool),
            "kafka": await _kafka_ready(runtime.producer, settings.topics.requested),
        }
        status = 200 if all(checks.values()) else 503
        return JSONResponse({"ready": status == 200, **checks}, status_code=status)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(
            generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return app


async def _deliver(
    request: Request, settings: WebhookSettings, secret: str
) -> tuple[int, dict[str, object], str]:
    """Handle one delivery: (status code, JSON answer, outcome for the metrics)."""
    runtime: Runtime = request.app.state.runtime
    event: StripeEvent | None = None
    try:
        body = await read_body(request, max_bytes=settings.webhook_max_body_bytes)
        verify_signature(
            body,
            request.headers.get(SIGNATURE_HEADER),
            secret=secret,
            tolerance_s=settings.webhook_signature_tolerance_s,
        )
        event = parse_event(body)
        handled = await runtime.handler.handle(event, body)
    except Rejected as exc:
        _log_rejection(exc)
        outcome = "too_large" if exc.status_code == 413 else "rejected"
        return exc.status_code, {"error": exc.reason}, outcome
    except (DatabaseUnavailable, KafkaUnavailable) as exc:
        # A Kafka fault is logged where the order it concerns is known.
        if isinstance(exc, DatabaseUnavailable):
            logger.warning(
                "Database unavailable, answering 503; Stripe will retry"
                " event_id=%s event_type=%s: %s",
                event.id if event else None,
                event.type if event else None,
                exc,
            )
        return 503, {"error": "try again later"}, "unavailable"
    except Exception:
        logger.exception(
            "Delivery failed unexpectedly, answering 500; Stripe will retry"
            " event_id=%s event_type=%s",
            event.id if event else None,
            event.type if event else None,
        )
        return 500, {"error": "internal error"}, "error"

    answer: dict[str, object] = {"received": True, "outcome": handled.outcome.value}
    if handled.order_id is not None:
        answer["order_id"] = str(handled.order_id)
    return 200, answer, handled.outcome.value


def _log_rejection(exc: Rejected) -> None:
    if exc.reason == INVALID_SIGNATURE:
        logger.warning(
            "Refused a delivery with an invalid signature; if Stripe sent it,"
            " STRIPE_WEBHOOK_SECRET is not this endpoint's signing secret"
        )
        return
    logger.info("Refused a delivery with %d: %s", exc.status_code, exc.reason)


async def _database_ready(pool: Pool) -> bool:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S), pooled(pool) as conn:
            await conn.execute("select 1")
    except (DatabaseUnavailable, TimeoutError):
        return False
    return True


async def _kafka_ready(producer: AIOKafkaProducer, topic: str) -> bool:
    """Whether the broker answers and every partition of ``topic`` has a leader."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            cluster = await producer.client.fetch_all_metadata()
    except (KafkaError, TimeoutError):
        return False
    partitions = cluster.partitions_for_topic(topic) or set()
    led = cluster.available_partitions_for_topic(topic) or set()
    return bool(partitions) and partitions == led
