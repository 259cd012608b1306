"""Topic names and every name derived from them, in one place.

A prefix (``KAFKA_TOPIC_PREFIX``) lets tests and side-by-side deployments
share one broker without seeing each other's messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GENERATION_REQUESTED = "generation.requested"
VARIANT_GENERATE = "variant.generate"
VARIANT_COMPLETED = "variant.completed"
GENERATION_SETTLED = "generation.settled"
GENERATION_DLQ = "generation.dlq"

#: Retry tiers of ``variant.generate``: attempt n+1 waits in tier n.
RETRY_TIER_COUNT = 4
#: Attempts per variant: the first one and one per retry tier.
MAX_ATTEMPTS = RETRY_TIER_COUNT + 1

ORCHESTRATOR_APP_ID = "songswipe-orchestrator"
ORDER_STATE_TABLE = "order-state"

DAY_MS = 24 * 60 * 60 * 1000


def retry_tier_name(base: str, tier: int) -> str:
    """The topic of retry ``tier`` (1-based) of ``base``."""
    if not 1 <= tier <= RETRY_TIER_COUNT:
        raise ValueError(f"retry tier must be 1..{RETRY_TIER_COUNT}, got {tier}")
    return f"{base}.retry-{tier}"


def changelog_name(app_id: str, table: str) -> str:
    """The changelog topic faust keeps for ``table`` of app ``app_id``."""
    return f"{app_id}-{table}-changelog"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


@dataclass(frozen=True)
class Topics:
    """Every topic of the pipeline under one prefix."""

    prefix: str = ""

    @property
    def requested(self) -> str:
        return self.prefix + GENERATION_REQUESTED

    @property
    def generate(self) -> str:
        return self.prefix + VARIANT_GENERATE

    @property
    def completed(self) -> str:
        return self.prefix + VARIANT_COMPLETED

    @property
    def settled(self) -> str:
        return self.prefix + GENERATION_SETTLED

    @property
    def dlq(self) -> str:
        return self.prefix + GENERATION_DLQ

    @property
    def orchestrator_app_id(self) -> str:
        return self.prefix + ORCHESTRATOR_APP_ID

    @property
    def order_state_changelog(self) -> str:
        return changelog_name(self.orchestrator_app_id, ORDER_STATE_TABLE)

    def retry(self, tier: int) -> str:
        return retry_tier_name(self.generate, tier)

    @property
    def retries(self) -> list[str]:
        return [self.retry(tier) for tier in range(1, RETRY_TIER_COUNT + 1)]

    def specs(self, partitions: int) -> list[TopicSpec]:
        """What to create: one partition count for all, so keys co-partition."""
        work = {"retention.ms": str(7 * DAY_MS)}
        retries = {"retention.ms": str(2 * DAY_MS)}
        dead_letters = {"retention.ms": str(30 * DAY_MS)}
        state = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}

        specs = [
            TopicSpec(self.requested, partitions, work),
            TopicSpec(self.generate, partitions, work),
            TopicSpec(self.completed, partitions, work),
            TopicSpec(self.settled, partitions, work),
            TopicSpec(self.dlq, partitions, dead_letters),
            TopicSpec(self.order_state_changelog, partitions, state),
        ]
        specs += [TopicSpec(name, partitions, retries) for name in self.retries]
        return specs
