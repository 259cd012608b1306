"""A fake ElevenLabs (and Supabase Storage) as a real HTTP server on localhost.

Each test scripts its answers: ``plan(marker, replies)`` makes the requests
whose prompt contains ``marker`` get ``replies`` in order, and the default
reply afterwards. Every request is recorded with its arrival time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import lameenc
import numpy as np

SAMPLE_RATE = 22_050


def tiny_mp3(seconds: float = 1.0) -> bytes:
    """A short 440 Hz tone as MP3, what a successful generation returns."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * 440.0 * t) * 8_000).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(64)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_channels(1)
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


TINY_MP3 = tiny_mp3()


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    delay_s: float = 0.0

    def body(self) -> tuple[bytes, str]:
        if self.json_body is not None:
            return json.dumps(self.json_body).encode(), "application/json"
        if 200 <= self.status < 300:
            return TINY_MP3, "audio/mpeg"
        error = {"detail": {"status": f"http_{self.status}", "message": "scripted"}}
        return json.dumps(error).encode(), "application/json"


@dataclass(frozen=True)
class Received:
    #: ``time.monotonic()`` and ``time.time()`` on arrival.
    at: float
    wall_at: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def prompt(self) -> str:
        return str(self.json().get("prompt", ""))


class FakeElevenLabs:
    def __init__(self, *, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self._plans: dict[str, list[Reply]] = {}
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def plan(self, marker: str, replies: Iterable[Reply]) -> None:
        with self._lock:
            self._plans[marker] = list(replies)

    def received(self, marker: str | None = None) -> list[Received]:
        with self._lock:
            found = list(self._received)
        music = [r for r in found if r.path == "/v1/music"]
        if marker is None:
            return music
        return [r for r in music if marker in r.prompt]

    def uploads(self) -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.path.startswith("/storage/")]

    def _answer(self, received: Received) -> Reply:
        with self._lock:
            self._received.append(received)
            if not received.path.startswith("/v1/music"):
                return Reply(json_body={"Key": received.path})
            prompt = received.prompt
            for marker, replies in self._plans.items():
                if marker in prompt and replies:
                    return replies.pop(0)
            return self.default

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fake_elevenlabs(*, default: Reply | None = None) -> Iterator[FakeElevenLabs]:
    fake = FakeElevenLabs(default=default)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once in the benchmark.
    request_queue_size = 512
    fake: FakeElevenLabs


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:
            # The client died mid-request (a SIGKILL test): no request arrived.
            self.close_connection = True
            return
        url = urlsplit(self.path)
        received = Received(
            at=time.monotonic(),
            wall_at=time.time(),
            method="POST",
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = self.server.fake._answer(received)
        if reply.delay_s:
            time.sleep(reply.delay_s)

        payload, content_type = reply.body()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout, or a process that was killed).
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return None
