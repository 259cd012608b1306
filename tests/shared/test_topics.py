"""Topic creation: one partition count, compaction where state is kept."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from songswipe.shared.kafka import ensure_topics
from songswipe.shared.topics import RETRY_TIER_COUNT, Topics, retry_tier_name
from tests.conftest import TEST_PARTITIONS


async def describe(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            _, _, _, name, entries = resource[:5]
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


async def test_compacted_topics_are_compacted(
    kafka_bootstrap: str, topics: Topics
) -> None:
    specs = topics.specs(TEST_PARTITIONS)

    configs = await describe(kafka_bootstrap, [spec.name for spec in specs])

    compacted = {s.name for s in specs if s.compacted}
    assert compacted == {topics.order_state_changelog}
    for spec in specs:
        expected = "compact" if spec.name in compacted else "delete"
        assert configs[spec.name]["cleanup.policy"] == expected, spec.name


async def test_every_topic_has_the_one_partition_count(
    kafka_bootstrap: str, topics: Topics
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([s.name for s in topics.specs(1)])
    finally:
        await admin.close()

    counts = {topic["topic"]: len(topic["partitions"]) for topic in described}
    assert set(counts.values()) == {TEST_PARTITIONS}
    assert len(counts) == 6 + RETRY_TIER_COUNT


async def test_creating_again_changes_nothing(
    kafka_bootstrap: str, topics: Topics
) -> None:
    await ensure_topics(kafka_bootstrap, topics.specs(TEST_PARTITIONS))

    configs = await describe(kafka_bootstrap, [topics.order_state_changelog])

    assert configs[topics.order_state_changelog]["cleanup.policy"] == "compact"


def test_retry_tier_names_come_from_one_function() -> None:
    topics = Topics("p.")

    assert topics.retries == [
        retry_tier_name("p.variant.generate", n) for n in (1, 2, 3, 4)
    ]
    assert topics.retry(1) == "p.variant.generate.retry-1"
