"""Session-wide real infrastructure and per-test isolation.

Each test session gets its own database, migrated from scratch; each test
starts from empty tables and gets its own topic prefix, so tests never see
each other's rows or messages.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from songswipe.shared.db import Connection, connect
from songswipe.shared.kafka import ensure_topics
from songswipe.shared.migrate import apply_migrations
from songswipe.shared.topics import Topics
from tests import infra

logger = logging.getLogger(__name__)

TEST_PARTITIONS = 3
APP_TABLES = "customizations, orders, song_variants, failed_jobs, stripe_events"


@pytest.fixture(scope="session")
def real_infra() -> Iterator[infra.Infra]:
    with infra.provide() as provided:
        yield provided


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        with infra.provide() as provided:
            with psycopg.connect(provided.database_url, connect_timeout=5) as conn:
                row = conn.execute("select version()").fetchone()
            postgres = row[0] if row else "unknown"
            return [
                f"infrastructure: {provided.origin}",
                f"kafka: {provided.kafka_bootstrap} ({infra.kafka_process_line()})",
                f"postgres: {postgres}",
            ]
    except Exception as exc:  # a header must never break the run
        return [f"infrastructure: not reachable yet ({exc})"]


@pytest.fixture(scope="session")
def kafka_bootstrap(real_infra: infra.Infra) -> str:
    return real_infra.kafka_bootstrap


@pytest.fixture(scope="session")
async def database_url(real_infra: infra.Infra) -> AsyncIterator[str]:
    """A fresh database for this session, with every migration applied."""
    name = f"songswipe_test_{uuid.uuid4().hex[:12]}"
    base = psycopg.conninfo.conninfo_to_dict(real_infra.database_url)
    async with await psycopg.AsyncConnection.connect(
        real_infra.database_url, autocommit=True
    ) as admin:
        await admin.execute(f'create database "{name}"')

    url = psycopg.conninfo.make_conninfo(**{**base, "dbname": name})
    url = _as_url(url)
    await apply_migrations(url)
    yield url

    async with await psycopg.AsyncConnection.connect(
        real_infra.database_url, autocommit=True
    ) as admin:
        await admin.execute(f'drop database if exists "{name}" with (force)')


def _as_url(conninfo: str) -> str:
    """``key=value`` conninfo as a ``postgresql://`` URL, as the settings want."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = parts.get("user", "")
    password = parts.get("password", "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    return f"postgresql://{auth}{host}:{port}/{parts['dbname']}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Connection]:
    """A connection to empty tables (autocommit)."""
    conn = await connect(database_url)
    await conn.execute(f"truncate {APP_TABLES} cascade")
    yield conn
    await conn.close()


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[Topics]:
    """Every pipeline topic under a prefix of this test's own, dropped after.

    Left behind, thousands of test topics would weigh on the shared broker.
    """
    created = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(kafka_bootstrap, created.specs(TEST_PARTITIONS))
    yield created

    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka_bootstrap, client_id="songswipe-tests-cleanup"
    )
    try:
        await admin.start()
        await admin.delete_topics([spec.name for spec in created.specs(1)])
    except KafkaError as exc:
        logger.warning("Test topics %s* left behind: %r", created.prefix, exc)
    finally:
        await admin.close()
