"""``songswipe down``: stop the services a ``songswipe run`` left behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from songswipe.cli.errors import ExitCode
from songswipe.cli.settings import CliSettings
from songswipe.cli.supervisor import pid_path
from tests.cli.cli import invoke_sync

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(120)"
)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _fake_service(
    code: str, service: str, run_dir: Path, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """A process whose command line names the service, recorded in its pid file."""
    process = _sleeper(code, f"songswipe-{service}", started)
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_path(run_dir, service).write_text(f"{process.pid}\n")
    return process


def _sleeper(
    code: str, argument: str, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", code, argument],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    started.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    return process


def test_down_stops_recorded_services_and_kills_stubborn_ones(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    run_dir = tmp_path / "run"
    polite = _fake_service(SLEEPER, "webhook", run_dir, processes)
    stubborn = _fake_service(STUBBORN, "generator", run_dir, processes)
    # A pid file naming a process that is not the service is left alone.
    bystander = _sleeper(SLEEPER, "something-else", processes)
    pid_path(run_dir, "finalizer").write_text(f"{bystander.pid}\n")
    settings = CliSettings(songswipe_run_dir=run_dir, service_stop_timeout_s=1.0)

    result = invoke_sync(settings, "down")

    assert result.exit_code == ExitCode.OK, result.output
    assert polite.wait(timeout=5) is not None
    assert stubborn.wait(timeout=5) is not None
    assert "webhook stopped" in result.stdout
    assert "generator killed" in result.stdout
    assert bystander.poll() is None
    assert not list(run_dir.glob("*.pid"))


def test_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    settings = CliSettings(songswipe_run_dir=tmp_path)

    result = invoke_sync(settings, "down")

    assert result.exit_code == ExitCode.OK
    assert "No songswipe service was running" in result.stdout
