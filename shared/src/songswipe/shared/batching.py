"""Concurrent calls of one statement, run as one round trip.

Under load, dozens of tasks each want the same small update for their own
row. Sent one by one, every update costs a database round trip, a parse and
a plan; sent together, they cost one. A ``Batcher`` takes each call's key
and arguments, runs everything that arrived while the previous batch was
out with a single ``run_many`` call, and hands each caller its own result.

One batch is in flight at a time, so a lone call waits for nothing but the
event loop's next turn, and calls arriving during a round trip ride the
next one together. Two calls with the same key never share a batch, so
``run_many`` may map results back by key.

A batch must never wait on one slow row: ``run_many`` skips what it cannot
have at once (a row another transaction holds locked) by leaving its key out
of the result, and that call runs alone with ``run_one``, beside the batches,
so only it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
R = TypeVar("R")

#: Runs one batch: (key, arguments) pairs in, each handled key's result out
#: (``None`` included). A key left out is run again alone by ``run_one``.
RunMany = Callable[[Sequence[tuple[K, A]]], Awaitable[dict[K, R | None]]]
RunOne = Callable[[K, A], Awaitable[R | None]]


class Batcher(Generic[K, A, R]):
    def __init__(
        self, run_many: RunMany[K, A, R], run_one: RunOne[K, A, R], *, max_size: int
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        self._run_many = run_many
        self._run_one = run_one
        self._max_size = max_size
        self._waiting: list[tuple[K, A, asyncio.Future[R | None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._alone: set[asyncio.Task[None]] = set()

    async def __call__(self, key: K, arguments: A) -> R | None:
        future: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, arguments, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                # Let every caller woken in this turn of the loop join in.
                await asyncio.sleep(0)
                await self._flush(self._take())
        except asyncio.CancelledError:
            # Shutting down: no caller may wait for a batch that never runs.
            for _, _, future in self._waiting:
                future.cancel()
            self._waiting = []
            raise
        finally:
            self._flusher = None

    def _take(self) -> list[tuple[K, A, asyncio.Future[R | None]]]:
        batch: list[tuple[K, A, asyncio.Future[R | None]]] = []
        later: list[tuple[K, A, asyncio.Future[R | None]]] = []
        keys: set[K] = set()
        for entry in self._waiting:
            key, _, future = entry
            if future.done():
                continue
            if key in keys or len(batch) >= self._max_size:
                later.append(entry)
                continue
            keys.add(key)
            batch.append(entry)
        self._waiting = later
        return batch

    async def _flush(self, batch: list[tuple[K, A, asyncio.Future[R | None]]]) -> None:
        if not batch:
            return
        try:
            results = await self._run_many([(key, args) for key, args, _ in batch])
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for key, args, future in batch:
            if future.done():
                continue
            if key in results:
                future.set_result(results[key])
                continue
            task = asyncio.create_task(self._one_alone(key, args, future))
            self._alone.add(task)
            task.add_done_callback(self._alone.discard)

    async def _one_alone(
        self, key: K, args: A, future: asyncio.Future[R | None]
    ) -> None:
        try:
            result = await self._run_one(key, args)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
