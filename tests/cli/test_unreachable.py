"""Clear errors and exit codes when the database or Kafka cannot be reached."""

from __future__ import annotations

import socket

from songswipe.cli.errors import ExitCode
from tests.cli.cli import run_command


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_database_unreachable_says_make_up_and_exits_3(
    kafka_bootstrap: str,
) -> None:
    port = _closed_port()
    env = {
        "DATABASE_URL": f"postgresql://songswipe:songswipe@127.0.0.1:{port}/songswipe",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
    }

    listed = await run_command("dlq", "list", env=env)
    shown = await run_command(
        "orders", "show", "00000000-0000-4000-8000-000000000000", env=env
    )

    for completed in (listed, shown):
        assert completed.code == ExitCode.DATABASE_UNAVAILABLE, completed.stderr
        assert "database is unreachable" in completed.stderr
        assert "make up" in completed.stderr
        assert "Traceback" not in completed.stderr


async def test_kafka_unreachable_on_replay_says_make_up_and_exits_4(
    database_url: str,
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
    }

    completed = await run_command("dlq", "replay", "--all", env=env)

    assert completed.code == ExitCode.KAFKA_UNAVAILABLE, completed.stderr
    assert "Kafka is unreachable" in completed.stderr
    assert "make up" in completed.stderr
    assert "Traceback" not in completed.stderr


async def test_help_documents_the_exit_codes() -> None:
    completed = await run_command("--help", env={})

    assert completed.code == ExitCode.OK
    for documented in ("3 database unreachable", "4 Kafka unreachable", "130"):
        assert documented in " ".join(completed.stdout.split())


async def test_demo_without_running_services_says_make_run_and_exits_7(
    database_url: str, kafka_bootstrap: str
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "WEBHOOK_URL": f"http://127.0.0.1:{_closed_port()}",
        "SERVICE_START_TIMEOUT_S": "2",
    }

    completed = await run_command("demo", env=env)

    assert completed.code == ExitCode.SERVICES_FAILED, completed.stderr
    assert "make run" in completed.stderr
    assert "Traceback" not in completed.stderr
