"""The four services as separate processes, and a fake ElevenLabs, for e2e tests.

The services run from a temporary working directory, so no ``.env`` of the
checkout leaks in, and each gets its own ports, so tests never clash with a
``make run`` on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import lameenc
import numpy as np

from songswipe.cli.demo import checkout_completed_event, send_event
from songswipe.cli.settings import CliSettings
from songswipe.cli.supervisor import SERVICES, Supervisor
from songswipe.shared.db import Connection
from songswipe.shared.topics import Topics
from tests.support import insert_customization

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
WORKERS = ("orchestrator", "generator", "finalizer")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Pipeline:
    supervisor: Supervisor
    env: dict[str, str]
    webhook_url: str
    metrics_urls: dict[str, str]
    songs_dir: Path
    log_dir: Path

    def cli_settings(self) -> CliSettings:
        return CliSettings(
            kafka_bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"],
            database_url=self.env["DATABASE_URL"],
            kafka_topic_prefix=self.env["KAFKA_TOPIC_PREFIX"],
            kafka_partitions=int(self.env["KAFKA_PARTITIONS"]),
            webhook_url=self.webhook_url,
            songs_dir=self.songs_dir,
        )

    def logs(self) -> str:
        """Every service's log, for a failing assertion's message."""
        parts = []
        for service in SERVICES:
            path = self.log_dir / f"{service}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {service}.log (last 40 lines)\n")
            parts.append("\n".join(text.splitlines()[-40:]))
        return "\n".join(parts)


@asynccontextmanager
async def running_pipeline(
    workdir: Path,
    *,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Pipeline]:
    """Start the four services; stop them (SIGTERM, then SIGKILL) afterwards."""
    webhook_port = free_port()
    metrics_ports = {service: free_port() for service in WORKERS}
    env = {
        "ENVIRONMENT": "test",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "KAFKA_PARTITIONS": "3",
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(webhook_port),
        "SONGS_DIR": str(workdir / "songs"),
        "ORCHESTRATOR_DATA_DIR": str(workdir / "orchestrator"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "ELEVENLABS_API_KEY": "",
        **(extra_env or {}),
    }
    environment = {service: dict(env) for service in SERVICES}
    for service, port in metrics_ports.items():
        environment[service]["METRICS_PORT"] = str(port)
    webhook_url = f"http://127.0.0.1:{webhook_port}"
    pipeline = Pipeline(
        supervisor=Supervisor(
            log_dir=workdir / "logs",
            run_dir=workdir / "run",
            environment=environment,
            cwd=workdir,
        ),
        env=env,
        webhook_url=webhook_url,
        metrics_urls={
            "webhook": f"{webhook_url}/metrics",
            **{s: f"http://127.0.0.1:{p}/metrics" for s, p in metrics_ports.items()},
        },
        songs_dir=workdir / "songs",
        log_dir=workdir / "logs",
    )

    pipeline.supervisor.start()
    try:
        await _wait_ready(pipeline)
        yield pipeline
    finally:
        pipeline.supervisor.stop(timeout_s=STOP_TIMEOUT_S)


async def _wait_ready(pipeline: Pipeline) -> None:
    """The webhook is ready and every worker serves its metrics."""
    urls = [f"{pipeline.webhook_url}/readyz", *pipeline.metrics_urls.values()]
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        for url in urls:
            while True:
                pipeline.supervisor.check_alive()
                try:
                    if (await client.get(url)).status_code == httpx.codes.OK:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} not ready\n{pipeline.logs()}")
                await asyncio.sleep(0.2)


async def place_order(
    db: Connection, pipeline: Pipeline, **customization: Any
) -> uuid.UUID:
    """A customization row and its paid checkout, signed, through the webhook."""
    row = await insert_customization(db, **customization)
    session_id = f"cs_test_e2e_{uuid.uuid4().hex}"
    event = checkout_completed_event(
        session_id=session_id, user_id=row["user_id"], customization_id=row["id"]
    )
    async with httpx.AsyncClient(timeout=10.0) as client:
        await send_event(client, pipeline.cli_settings(), event)
    cursor = await db.execute(
        "select id from orders where stripe_session_id = %s", (session_id,)
    )
    found = await cursor.fetchone()
    assert found is not None, "the webhook answered 200 without an order"
    order_id: uuid.UUID = found["id"]
    return order_id


# ---------------------------------------------------------------- ElevenLabs


def tiny_mp3(seconds: float = 1.0) -> bytes:
    """A real MP3 of a quiet tone, as the fake provider's answer."""
    rate = 44_100
    samples = np.sin(2 * np.pi * 330.0 * np.arange(int(rate * seconds)) / rate)
    pcm = (0.2 * samples * 32767).astype("<i2").tobytes()
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(64)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(7)
    return bytes(encoder.encode(pcm) + encoder.flush())


@dataclass
class FakeElevenLabs:
    """A real HTTP server answering ``POST /v1/music`` like ElevenLabs."""

    base_url: str
    api_key: str
    #: Requests whose prompt this accepts get a 500 until ``heal()``.
    failing: Callable[[str], bool]
    healed: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def heal(self) -> None:
        with self.lock:
            self.healed = True

    def answer(self, body: dict[str, Any], api_key: str | None) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(body)
            if api_key != self.api_key:
                return 401, b'{"detail": {"status": "invalid_api_key"}}'
            if not self.healed and self.failing(str(body.get("prompt", ""))):
                return 500, b'{"detail": {"status": "internal_error"}}'
        return 200, tiny_mp3()


@contextmanager
def fake_elevenlabs(failing: Callable[[str], bool]) -> Iterator[FakeElevenLabs]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    fake = FakeElevenLabs(
        base_url=f"http://{host!s}:{port}",
        api_key=f"fake-{uuid.uuid4().hex}",
        failing=failing,
    )
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fake: FakeElevenLabs = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.startswith("/v1/music"):
            status, content = 404, b'{"detail": "not found"}'
        else:
            status, content = fake.answer(body, self.headers.get("xi-api-key"))
        self.send_response(status)
        kind = "audio/mpeg" if status == 200 else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        return
