"""Starting the four services as separate processes, and stopping them.

Each service runs in a session of its own, so a Ctrl-C in the terminal
reaches only the CLI, which then stops the services in order: SIGTERM, a
grace period, SIGKILL. Pid files let ``songswipe down`` (and ``make down``)
stop services a lost terminal left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from songswipe.cli.errors import CliError, ExitCode

logger = logging.getLogger(__name__)

SERVICES = ("webhook", "orchestrator", "generator", "finalizer")
LOG_TAIL_LINES = 30
_POLL_S = 0.1


def command_name(service: str) -> str:
    return f"songswipe-{service}"


def pid_path(run_dir: Path, service: str) -> Path:
    return run_dir / f"{command_name(service)}.pid"


def log_path(log_dir: Path, service: str) -> Path:
    return log_dir / f"{service}.log"


def find_command(service: str) -> str:
    """The service's entry point, from this interpreter's environment first."""
    name = command_name(service)
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(
        name
    )
    if found is None:
        raise CliError(
            f"{name} is not installed in this environment",
            code=ExitCode.SERVICES_FAILED,
            hint="Install the workspace with `make install`.",
        )
    return found


def recorded_pid(run_dir: Path, service: str) -> int | None:
    """The pid in the service's pid file, if that process is still the service."""
    path = pid_path(run_dir, service)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if command_name(service).encode() in cmdline else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        # A zombie has exited; only its parent's wait is missing.
        return stat.read_text().split(")", 1)[1].split()[0] != "Z"
    return True


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Signal the service's process group (it leads one of its own)."""
    with contextlib.suppress(ProcessLookupError):
        try:
            os.killpg(pid, signum)
        except PermissionError:
            os.kill(pid, signum)


def stop_pids(pids: Mapping[str, int], *, timeout_s: float) -> dict[str, str]:
    """SIGTERM every pid, wait up to ``timeout_s``, SIGKILL what is left.

    Returns how each service ended: ``stopped`` or ``killed``.
    """
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)

    deadline = time.monotonic() + timeout_s
    waiting = dict(pids)
    outcome: dict[str, str] = {}
    while waiting and time.monotonic() < deadline:
        for service, pid in list(waiting.items()):
            if not _alive(pid):
                outcome[service] = "stopped"
                del waiting[service]
        time.sleep(_POLL_S)

    for service, pid in waiting.items():
        logger.warning(
            "Service %s (pid %d) ignored SIGTERM for %.0f s, sending SIGKILL",
            service,
            pid,
            timeout_s,
        )
        _signal_group(pid, signal.SIGKILL)
        outcome[service] = "killed"
    return outcome


def stop_recorded(run_dir: Path, *, timeout_s: float) -> dict[str, str]:
    """Stop the services whose pid files name a live service process."""
    pids = {
        service: pid
        for service in SERVICES
        if (pid := recorded_pid(run_dir, service)) is not None
    }
    outcome = stop_pids(pids, timeout_s=timeout_s)
    for service in SERVICES:
        pid_path(run_dir, service).unlink(missing_ok=True)
    return outcome


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServiceProcess:
    service: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


class Supervisor:
    """The four services of one ``songswipe run``."""

    def __init__(
        self,
        *,
        log_dir: Path,
        run_dir: Path,
        environment: Mapping[str, Mapping[str, str]] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.run_dir = run_dir
        self.environment = environment or {}
        self.cwd = cwd
        self.processes: list[ServiceProcess] = []

    def refuse_if_running(self) -> None:
        running = {
            service: pid
            for service in SERVICES
            if (pid := recorded_pid(self.run_dir, service)) is not None
        }
        if running:
            listed = ", ".join(f"{s} (pid {p})" for s, p in running.items())
            raise CliError(
                f"Services from an earlier run are still up: {listed}",
                code=ExitCode.REFUSED,
                hint="Stop them with `songswipe down`, or use them with"
                " `songswipe demo`.",
            )

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        commands = {service: find_command(service) for service in SERVICES}
        for service, command in commands.items():
            self.processes.append(self._start_one(service, command))

    def _start_one(self, service: str, command: str) -> ServiceProcess:
        path = log_path(self.log_dir, service)
        # Each run starts its logs afresh, so a JSON log stays one JSON per line.
        log_file = path.open("wb")
        env = {**os.environ, **self.environment.get(service, {})}
        process = subprocess.Popen(
            [command],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        pid_path(self.run_dir, service).write_text(f"{process.pid}\n")
        logger.info("Started service=%s pid=%d log=%s", service, process.pid, path)
        return ServiceProcess(service, process, path, log_file)

    def check_alive(self) -> None:
        """Raise ``CliError`` with the log's last lines if a service has exited."""
        for running in self.processes:
            code = running.process.poll()
            if code is None:
                continue
            tail = log_tail(running.log_path)
            raise CliError(
                f"Service {running.service} exited with code {code}."
                f" Last lines of {running.log_path}:\n{tail}",
                code=ExitCode.SERVICES_FAILED,
                hint=f"Full log: {running.log_path}",
            )

    async def watch(self, interval_s: float = 1.0) -> None:
        """Return never; raise when a service exits on its own."""
        while True:
            self.check_alive()
            await asyncio.sleep(interval_s)

    def stop(self, *, timeout_s: float) -> dict[str, str]:
        pids = {
            p.service: p.process.pid for p in self.processes if p.process.poll() is None
        }
        outcome = stop_pids(pids, timeout_s=timeout_s)
        for running in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(timeout=1)
            running.log_file.close()
            pid_path(self.run_dir, running.service).unlink(missing_ok=True)
        self.processes.clear()
        return outcome
