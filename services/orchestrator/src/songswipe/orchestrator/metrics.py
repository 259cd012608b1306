"""The orchestrator's Prometheus metrics (the process-wide default registry)."""

from __future__ import annotations

from prometheus_client import Counter

requests = Counter(
    "songswipe_orchestrator_requests",
    "generation.requested messages by outcome",
    ["outcome"],
)
completions = Counter(
    "songswipe_orchestrator_completions",
    "variant.completed messages by what they changed",
    ["change"],
)
settlements = Counter(
    "songswipe_orchestrator_settlements",
    "generation.settled published, by outcome",
    ["outcome"],
)
redispatches = Counter(
    "songswipe_orchestrator_redispatches",
    "Variants dispatched again after the generation timeout",
)
dead_letters = Counter(
    "songswipe_orchestrator_dead_letters",
    "Dead letters published by the orchestrator, by job type",
    ["job_type"],
)
malformed = Counter(
    "songswipe_orchestrator_malformed_messages",
    "Messages skipped because they did not match their topic's schema",
    ["topic"],
)
