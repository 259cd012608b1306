"""The webhook's Prometheus metrics, in a registry of each app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Most deliveries take a few milliseconds; the top buckets catch timeouts.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "songswipe_webhook_requests",
            "Stripe deliveries by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "songswipe_webhook_request_duration_seconds",
            "Time from the request to the answer of a Stripe delivery",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.orders_recorded = Counter(
            "songswipe_webhook_orders_recorded",
            "Orders created, one per Checkout session",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "songswipe_webhook_duplicates",
            "Deliveries of an event or a session already handled",
            ["kind"],
            registry=self.registry,
        )
        self.sweep_republished = Counter(
            "songswipe_webhook_sweep_republished",
            "Orders left paid that the sweep handed on again",
            registry=self.registry,
        )
