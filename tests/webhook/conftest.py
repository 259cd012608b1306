"""The webhook app run in-process, lifespan included, against real infra."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from songswipe.shared.topics import Topics
from songswipe.webhook.app import create_app
from songswipe.webhook.settings import WebhookSettings
from tests.webhook.helpers import SECRET, delete_topics

SettingsFactory = Callable[..., WebhookSettings]


@pytest.fixture
async def topics(topics: Topics, kafka_bootstrap: str) -> AsyncIterator[Topics]:
    """The shared per-test topics, deleted after the test."""
    yield topics
    await delete_topics(kafka_bootstrap, topics.prefix)


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> SettingsFactory:
    def build(**overrides: Any) -> WebhookSettings:
        values: dict[str, Any] = {
            "environment": "test",
            "kafka_bootstrap_servers": kafka_bootstrap,
            "kafka_topic_prefix": topics.prefix,
            "kafka_partitions": 3,
            "database_url": database_url,
            "database_pool_max_size": 10,
            "stripe_webhook_secret": SECRET,
            "webhook_publish_timeout_s": 2.0,
            "webhook_sweep_interval_s": 0,
        }
        values.update(overrides)
        return WebhookSettings(**values)

    return build


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and talk to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://webhook.test"
        ) as client:
            yield client


@pytest.fixture
async def app(make_settings: SettingsFactory) -> FastAPI:
    return create_app(make_settings())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        yield client
