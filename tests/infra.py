"""Where the tests find a real Kafka broker and a real Postgres.

In order: the addresses in ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL``;
containers, where a Docker engine answers; otherwise the broker and database
that ``make up`` starts on this machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from songswipe.shared.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA_BOOTSTRAP_SERVERS,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    database_url: str
    origin: str


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def provide() -> Iterator[Infra]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    if kafka and database:
        yield Infra(kafka, database, "environment")
        return

    if docker_answers():
        with _containers(kafka, database) as infra:
            yield infra
        return

    kafka = kafka or DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    database = database or DEFAULT_DATABASE_URL
    if not port_open(kafka):
        raise RuntimeError(f"no Kafka broker at {kafka}: run `make up` first")
    yield Infra(kafka, database, "local services started by `make up`")


@contextmanager
def _containers(kafka: str | None, database: str | None) -> Iterator[Infra]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with ExitStack() as stack:
        if kafka is None:
            broker = stack.enter_context(
                KafkaContainer("apache/kafka:4.1.0").with_kraft()
            )
            kafka = broker.get_bootstrap_server()
        if database is None:
            postgres = stack.enter_context(
                PostgresContainer("postgres:15", driver=None)
            )
            database = postgres.get_connection_url()
        yield Infra(kafka, database, "testcontainers")


def kafka_process_line() -> str:
    """The command line of the broker ``make up`` started, if it is ours."""
    pid_file = ROOT / ".local" / "run" / "kafka.pid"
    if not pid_file.exists():
        return "not started by make up"
    pid = pid_file.read_text().strip()
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return f"pid {pid} not running"
    args = cmdline.read_bytes().split(b"\0")
    jars = next((a.decode() for a in args if b"kafka" in a and b"lib" in a), "")
    main = next((a.decode() for a in args if a == b"kafka.Kafka"), "")
    return f"pid {pid}: java {main} classpath={jars}"
