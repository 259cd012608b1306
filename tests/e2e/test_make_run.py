"""``songswipe run`` (what ``make run`` calls): services, demo order, Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from songswipe.cli.errors import ExitCode
from songswipe.cli.supervisor import SERVICES, pid_path, stop_recorded
from songswipe.shared.topics import Topics
from tests.e2e.harness import free_port

pytestmark = pytest.mark.slow

SONGSWIPE = Path(sys.executable).parent / "songswipe"
RUN_TIMEOUT_S = 120.0
WAITING_FOR_CTRL_C = "Press Ctrl-C"


def _free_port_run(length: int) -> int:
    """The first of ``length`` consecutive free ports."""
    for _ in range(50):
        base = random.randint(20_000, 60_000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + length):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError("no run of free ports")


def _size(path: Path) -> int:
    return path.stat().st_size


def _recorded_pids(run_dir: Path) -> dict[str, int]:
    """The pid ``songswipe run`` recorded for each service."""
    return {
        service: int(pid_path(run_dir, service).read_text()) for service in SERVICES
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _read_until(
    stream: asyncio.StreamReader, marker: str, output: list[str]
) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError("songswipe run exited:\n" + "".join(output))
        output.append(line.decode(errors="replace"))
        if marker in output[-1]:
            return


def _run_env(
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    metrics_base: int,
) -> dict[str, str]:
    """``songswipe run`` on the test's broker, database, topics and folders."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_PARTITIONS": "3",
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(free_port()),
        "SONGS_DIR": str(tmp_path / "songs"),
        "ORCHESTRATOR_DATA_DIR": str(tmp_path / "orchestrator"),
        "SONGSWIPE_LOG_DIR": str(tmp_path / "logs"),
        "SONGSWIPE_RUN_DIR": str(tmp_path / "run"),
        "SONGSWIPE_METRICS_PORT_BASE": str(metrics_base),
        "ELEVENLABS_API_KEY": "",
        "DEMO_TIMEOUT_S": "90",
    }


async def test_run_places_a_demo_order_then_stops_the_services_on_ctrl_c(
    database_url: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    metrics_base = _free_port_run(3)
    songs_dir = tmp_path / "songs"
    run_dir = tmp_path / "run"
    env = _run_env(database_url, kafka_bootstrap, topics, tmp_path, metrics_base)
    process = await asyncio.create_subprocess_exec(
        str(SONGSWIPE),
        "run",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        await asyncio.wait_for(
            _read_until(process.stdout, WAITING_FOR_CTRL_C, output), RUN_TIMEOUT_S
        )
        pids = _recorded_pids(run_dir)
        async with httpx.AsyncClient(timeout=5.0) as client:
            metrics = [
                await client.get(f"http://127.0.0.1:{port}/metrics")
                for port in range(metrics_base, metrics_base + 3)
            ]
        alive_before = {service: _alive(pid) for service, pid in pids.items()}
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output.append((await process.stdout.read()).decode(errors="replace"))
    text = "".join(output)

    assert alive_before == dict.fromkeys(SERVICES, True), text
    for service in SERVICES:
        assert f"{service}.log" in text
    assert re.search(r"order \S+ completed", text), text
    songs = re.findall(r"variant (\d): (\S+\.mp3)", text)
    assert sorted(n for n, _ in songs) == ["1", "2", "3"], text
    for _, path in songs:
        assert Path(path).is_relative_to(songs_dir.resolve())
        assert _size(Path(path)) > 1000
    assert [r.status_code for r in metrics] == [200, 200, 200]

    assert code == ExitCode.INTERRUPTED, text
    for service in SERVICES:
        assert f"{service} stopped" in text
        assert not _alive(pids[service])
        assert not pid_path(run_dir, service).exists()


async def test_ctrl_c_stops_the_services_after_the_output_pipe_closed(
    database_url: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    env = _run_env(database_url, kafka_bootstrap, topics, tmp_path, _free_port_run(3))
    # ``make run | tee log`` and Ctrl-C: the terminal's SIGINT reaches the
    # whole pipeline, so the reader is gone before the CLI stops anything.
    # ``sed`` quits once the demo has settled and closes the pipe first.
    shell = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        f"'{SONGSWIPE}' run 2>&1 | sed '/{WAITING_FOR_CTRL_C}/q'",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert shell.stdout is not None
    run_dir = tmp_path / "run"
    output: list[str] = []
    try:
        await asyncio.wait_for(
            _read_until(shell.stdout, WAITING_FOR_CTRL_C, output), RUN_TIMEOUT_S
        )
        pids = _recorded_pids(run_dir)
        alive_before = {service: _alive(pid) for service, pid in pids.items()}
        os.killpg(shell.pid, signal.SIGINT)
        await asyncio.wait_for(shell.wait(), 60)
        left_running = [service for service, pid in pids.items() if _alive(pid)]
        pid_files_left = [s for s in SERVICES if pid_path(run_dir, s).exists()]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        await shell.wait()
        stop_recorded(run_dir, timeout_s=10)
    text = "".join(output)

    assert alive_before == dict.fromkeys(SERVICES, True), text
    assert left_running == []
    assert pid_files_left == []
