"""The finalizer's Prometheus metrics (the process-wide default registry)."""

from __future__ import annotations

from prometheus_client import Counter

orders_settled = Counter(
    "songswipe_finalizer_orders_settled",
    "generation.settled messages handled, by outcome",
    ["outcome"],
)
dead_letters_stored = Counter(
    "songswipe_finalizer_dead_letters_stored",
    "Dead letters stored in failed_jobs, by job type",
    ["job_type"],
)
dead_letters_duplicate = Counter(
    "songswipe_finalizer_dead_letters_duplicate",
    "Dead letters already stored (published more than once)",
)
malformed = Counter(
    "songswipe_finalizer_malformed_messages",
    "Messages skipped because they did not match their topic's schema",
    ["topic"],
)
