"""A lean HTTP/1.1 load generator for the webhook benchmark.

A keep-alive client on asyncio streams costs a few microseconds a request,
so on a small machine the figures describe the server, not the client.
Open loop: requests leave on a fixed schedule whatever the answers do, and a
latency is counted from the moment a request was due, so a slow server
cannot hide its queue (no coordinated omission). Closed loop: a fixed number
of clients send back to back, for the most requests per second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Under uvicorn's keep-alive timeout (5 s): an older idle connection may be
#: closed by the server just as a request goes out on it.
MAX_IDLE_S = 3.0

#: Builds one request: (body, extra headers).
RequestFactory = Callable[[int], tuple[bytes, dict[str, str]]]


class HttpConnection:
    """One keep-alive connection; the server must answer with a Content-Length."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = time.monotonic()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if time.monotonic() - self._last_used > MAX_IDLE_S:
            self.close()
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port
            )
        assert self._reader is not None
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {self._host}:{self._port}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

        status_line = await self._reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        keep_alive = True
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        await self._reader.readexactly(length)
        self._last_used = time.monotonic()
        if not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass
class Run:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rate_per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
        return ordered[index] * 1000


class Connections:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[HttpConnection] = []
        self.opened = 0

    def take(self) -> HttpConnection:
        if self._idle:
            return self._idle.pop()
        self.opened += 1
        return HttpConnection(self._host, self._port)

    def give_back(self, connection: HttpConnection) -> None:
        self._idle.append(connection)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()


async def open_loop(
    host: str,
    port: int,
    path: str,
    make_request: RequestFactory,
    *,
    rate_per_s: float,
    duration_s: float,
    first_index: int = 0,
) -> Run:
    """Send ``rate_per_s`` requests a second for ``duration_s`` seconds."""
    run = Run()
    connections = Connections(host, port)
    total = int(rate_per_s * duration_s)
    interval_s = 1.0 / rate_per_s
    tasks: set[asyncio.Task[None]] = set()

    async def fire(index: int, due: float) -> None:
        body, headers = make_request(index)
        connection = connections.take()
        try:
            status = await connection.post(path, body, headers)
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            connection.close()
            run.errors += 1
            return
        run.latencies_s.append(time.perf_counter() - due)
        run.statuses[status] = run.statuses.get(status, 0) + 1
        connections.give_back(connection)

    started = time.perf_counter()
    for n in range(total):
        due = started + n * interval_s
        delay_s = due - time.perf_counter()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        task = asyncio.create_task(fire(first_index + n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    run.elapsed_s = time.perf_counter() - started
    connections.close()
    return run


async def closed_loop(
    host: str,
    port: int,
    path: str,
    make_request: RequestFactory,
    *,
    clients: int,
    duration_s: float,
    first_index: int = 0,
) -> Run:
    """``clients`` connections sending back to back for ``duration_s`` seconds."""
    run = Run()
    counter = iter(range(first_index, first_index + 10**9))
    started = time.perf_counter()
    deadline = started + duration_s

    async def client() -> None:
        connection = HttpConnection(host, port)
        try:
            while time.perf_counter() < deadline:
                body, headers = make_request(next(counter))
                sent = time.perf_counter()
                try:
                    status = await connection.post(path, body, headers)
                except (OSError, ConnectionError, asyncio.IncompleteReadError):
                    connection.close()
                    run.errors += 1
                    continue
                run.latencies_s.append(time.perf_counter() - sent)
                run.statuses[status] = run.statuses.get(status, 0) + 1
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    run.elapsed_s = time.perf_counter() - started
    return run
