"""Running the CLI from the tests: in-process, or as the installed command."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner, Result

from songswipe.cli.app import app
from songswipe.cli.settings import CliSettings
from songswipe.shared.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
SONGSWIPE = Path(sys.executable).parent / "songswipe"


def settings_for(
    *, kafka_bootstrap: str, database_url: str, topics: Topics, **extra: object
) -> CliSettings:
    return CliSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        kafka_topic_prefix=topics.prefix,
        kafka_partitions=3,
        **extra,  # type: ignore[arg-type]
    )


def invoke_sync(settings: CliSettings, *args: str) -> Result:
    """Run ``songswipe ARGS`` in this process (not from a running event loop)."""
    return CliRunner().invoke(app, list(args), obj=settings, catch_exceptions=False)


async def invoke(settings: CliSettings, *args: str) -> Result:
    """Run ``songswipe ARGS`` in this process, off the event loop."""
    return await asyncio.to_thread(invoke_sync, settings, *args)


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


async def run_command(*args: str, env: dict[str, str]) -> Completed:
    """Run the installed ``songswipe`` command as a process of its own."""
    process = await asyncio.create_subprocess_exec(
        str(SONGSWIPE),
        *args,
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())
