"""What the generator exposes on ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "songswipe_generator_attempts_total",
    "Generation attempts sent to the music provider",
    ["provider"],
)
OUTCOMES = Counter(
    "songswipe_generator_outcomes_total",
    "Handled variant.generate messages by how they ended",
    ["outcome"],
)
RETRIES = Counter(
    "songswipe_generator_retries_total",
    "Attempts sent to a retry tier, by the reason they failed",
    ["reason"],
)
DEAD_LETTERS = Counter(
    "songswipe_generator_dead_letters_total",
    "Work sent to the dead-letter topic, by error type",
    ["error_type"],
)
IN_FLIGHT = Gauge(
    "songswipe_generator_in_flight",
    "Messages being handled right now",
)
HELD_PARTITIONS = Gauge(
    "songswipe_generator_held_partitions",
    "Partitions paused until their next message is due",
)
GENERATION_SECONDS = Histogram(
    "songswipe_generator_generation_seconds",
    "Time the provider took to return audio (failures included)",
    ["provider"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 240, 480),
)
UPLOAD_SECONDS = Histogram(
    "songswipe_generator_upload_seconds",
    "Time storing the audio took",
    ["storage"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
