"""The orchestrator in-process (faust's test context) with real Kafka and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from songswipe.orchestrator.app import Orchestrator
from songswipe.orchestrator.settings import OrchestratorSettings
from songswipe.shared.topics import Topics

SettingsFactory = Callable[..., OrchestratorSettings]


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path
) -> SettingsFactory:
    def build(**overrides: Any) -> OrchestratorSettings:
        values: dict[str, Any] = {
            "environment": "test",
            "kafka_bootstrap_servers": kafka_bootstrap,
            "kafka_topic_prefix": topics.prefix,
            "kafka_partitions": 3,
            "database_url": database_url,
            "database_pool_max_size": 4,
            "orchestrator_data_dir": tmp_path / "faust",
            "orchestrator_generation_timeout_s": 60,
            "orchestrator_max_dispatches": 2,
            "metrics_port": 0,
        }
        values.update(overrides)
        return OrchestratorSettings(**values)

    return build


@asynccontextmanager
async def opened(settings: OrchestratorSettings) -> AsyncIterator[Orchestrator]:
    """An orchestrator whose resources are open; agents run in test contexts.

    faust's own producer runs too: table writes go to the real changelog.
    """
    built = Orchestrator(settings)
    await built.resources.open()
    await built.app.producer.start()
    # What the table does when the worker starts it: the partitioner needs
    # the changelog's metadata.
    await built.table.changelog_topic.maybe_declare()
    try:
        yield built
    finally:
        await built.app.producer.stop()
        await built.resources.close()


@pytest.fixture
async def orchestrator(make_settings: SettingsFactory) -> AsyncIterator[Orchestrator]:
    async with opened(make_settings()) as built:
        yield built
