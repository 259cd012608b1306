"""The generator's tests drop the topics they were given once they are done.

Each test gets ten topics of its own; left behind, thousands of them weigh
on the shared development broker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from songswipe.shared.topics import Topics

logger = logging.getLogger(__name__)


@pytest.fixture
async def topics(topics: Topics, kafka_bootstrap: str) -> AsyncIterator[Topics]:
    yield topics
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka_bootstrap, client_id="generator-tests-cleanup"
    )
    try:
        await admin.start()
        # Names do not depend on the partition count.
        await admin.delete_topics([spec.name for spec in topics.specs(1)])
    except KafkaError as exc:
        logger.warning("Test topics %s* left behind: %r", topics.prefix, exc)
    finally:
        await admin.close()
