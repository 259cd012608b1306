"""The orchestrator's settings: the shared ones plus its own timeouts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from songswipe.shared.settings import ServiceSettings

DAY_S = 24 * 60 * 60


class OrchestratorSettings(ServiceSettings):
    #: A variant with no completion this long after its dispatch is stuck.
    orchestrator_generation_timeout_s: float = Field(default=900.0, gt=0)
    #: Dispatches per variant, the first included, before it is failed.
    orchestrator_max_dispatches: int = Field(default=3, ge=1, le=10)
    #: How often the order table is scanned for stuck variants.
    orchestrator_sweep_interval_s: float = Field(default=30.0, gt=0)
    #: How long a settled order stays in the table, to recognise duplicates.
    orchestrator_settled_retention_s: float = Field(default=7 * DAY_S, gt=0)
    #: How long one order may retry a database fault before it is put back
    #: at the end of its partition, so the orders behind it can go first.
    orchestrator_db_retry_budget_s: float = Field(default=10.0, gt=0)
    #: Messages each agent handles at once; one order's stay in order.
    orchestrator_concurrency: int = Field(default=32, ge=1, le=1024)
    #: How long both producers (messages, the table's changelog) wait to
    #: batch: one produce request for many messages costs less CPU here, on
    #: the broker and downstream than one each. 20 ms is nothing beside a
    #: generation's tens of seconds, and under load it bought about a fifth
    #: more orders per second (README, Performance).
    orchestrator_kafka_linger_ms: int = Field(default=20, ge=0, le=100)
    #: How long the group waits for a silent worker before moving its orders.
    orchestrator_session_timeout_s: float = Field(default=30.0, ge=6, le=300)
    #: faust's own directory (the table itself lives in memory).
    orchestrator_data_dir: Path = Path(".local/orchestrator")
    #: Port of ``/metrics``; 0 turns metrics off.
    metrics_port: int = Field(default=9101, ge=0, le=65535)
