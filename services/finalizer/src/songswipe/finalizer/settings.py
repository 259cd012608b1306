"""The finalizer's settings: the shared ones plus its metrics port."""

from __future__ import annotations

from pydantic import Field

from songswipe.shared.settings import ServiceSettings

GROUP_ID = "songswipe-finalizer"


class FinalizerSettings(ServiceSettings):
    #: Messages handled at once, and the most one poll fetches.
    finalizer_max_poll_records: int = Field(default=100, ge=1, le=10_000)
    #: Port of ``/metrics``; 0 turns metrics off.
    metrics_port: int = Field(default=9103, ge=0, le=65535)

    @property
    def group_id(self) -> str:
        """The consumer group, under the topic prefix like the topics."""
        return f"{self.kafka_topic_prefix}{GROUP_ID}"
