"""The batcher: concurrent calls share one ``run_many``, each gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from songswipe.shared.batching import Batcher


class Recorder:
    """``run_many`` that doubles each argument and remembers every batch.

    An odd argument has no row (``None``); a key starting with ``locked`` is
    left out of the batch's result, so it runs alone.
    """

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.alone: list[str] = []
        self.fail_with = fail_with
        self.released = asyncio.Event()

    async def __call__(self, batch: Sequence[tuple[str, int]]) -> dict[str, int | None]:
        self.batches.append(list(batch))
        await asyncio.sleep(0.01)
        if self.fail_with is not None:
            raise self.fail_with
        return {
            key: 2 * value if value % 2 == 0 else None
            for key, value in batch
            if not key.startswith("locked")
        }

    async def one(self, key: str, value: int) -> int | None:
        self.alone.append(key)
        await self.released.wait()
        return 3 * value


def batcher_of(run_many: Recorder, *, max_size: int) -> Batcher[str, int, int]:
    return Batcher(run_many, run_many.one, max_size=max_size)


async def test_calls_arriving_together_run_as_one_batch() -> None:
    run_many = Recorder()
    batcher = batcher_of(run_many, max_size=100)

    results = await asyncio.gather(*(batcher(f"k{i}", 2 * i) for i in range(40)))

    assert results == [4 * i for i in range(40)]
    assert len(run_many.batches) == 1
    assert len(run_many.batches[0]) == 40


async def test_calls_during_a_round_trip_ride_the_next_batch() -> None:
    run_many = Recorder()
    batcher = batcher_of(run_many, max_size=100)

    first = asyncio.ensure_future(batcher("a", 2))
    await asyncio.sleep(0.005)  # the first batch is out now
    rest = await asyncio.gather(*(batcher(f"b{i}", 4) for i in range(10)))

    assert await first == 4
    assert rest == [8] * 10
    assert [len(batch) for batch in run_many.batches] == [1, 10]


async def test_a_key_left_out_of_the_result_gives_none() -> None:
    batcher = batcher_of(Recorder(), max_size=10)

    results = await asyncio.gather(batcher("even", 2), batcher("odd", 3))

    assert list(results) == [4, None]


async def test_the_same_key_twice_goes_in_separate_batches() -> None:
    run_many = Recorder()
    batcher = batcher_of(run_many, max_size=10)

    results = await asyncio.gather(batcher("same", 2), batcher("same", 6))

    assert list(results) == [4, 12]
    assert [[key for key, _ in batch] for batch in run_many.batches] == [
        ["same"],
        ["same"],
    ]


async def test_batches_hold_at_most_max_size() -> None:
    run_many = Recorder()
    batcher = batcher_of(run_many, max_size=4)

    await asyncio.gather(*(batcher(f"k{i}", 2) for i in range(10)))

    assert [len(batch) for batch in run_many.batches] == [4, 4, 2]


async def test_a_failed_batch_raises_in_every_caller_and_the_next_one_runs() -> None:
    run_many = Recorder(fail_with=ConnectionError("database away"))
    batcher = batcher_of(run_many, max_size=10)

    outcomes = await asyncio.gather(
        batcher("a", 2), batcher("b", 4), return_exceptions=True
    )
    run_many.fail_with = None

    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    assert await batcher("c", 8) == 16


async def test_a_cancelled_caller_leaves_the_others_their_answers() -> None:
    run_many = Recorder()
    batcher = batcher_of(run_many, max_size=10)

    first = asyncio.ensure_future(batcher("a", 2))
    await asyncio.sleep(0.005)
    cancelled = asyncio.ensure_future(batcher("b", 4))
    kept = asyncio.ensure_future(batcher("c", 6))
    await asyncio.sleep(0)
    cancelled.cancel()

    assert await first == 4
    assert await kept == 12
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert [key for key, _ in run_many.batches[-1]] == ["c"]


async def test_a_key_the_batch_skips_runs_alone_and_holds_up_no_batch() -> None:
    run_many = Recorder()
    batcher = batcher_of(run_many, max_size=10)

    locked = asyncio.ensure_future(batcher("locked-a", 5))
    first = await asyncio.gather(batcher("b", 2), batcher("c", 4))
    later = await batcher("d", 6)

    assert list(first) == [4, 8]
    assert later == 12
    assert not locked.done()
    assert run_many.alone == ["locked-a"]
    run_many.released.set()
    assert await locked == 15


async def test_callers_of_a_cancelled_batcher_are_cancelled_not_left_waiting() -> None:
    batcher = batcher_of(Recorder(), max_size=1)
    calls = [asyncio.ensure_future(batcher(f"k{i}", 2)) for i in range(3)]
    await asyncio.sleep(0.005)  # the first batch is out, two calls wait

    assert batcher._flusher is not None
    batcher._flusher.cancel()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*calls, return_exceptions=True), timeout=1
    )

    assert [type(o) for o in outcomes] == [asyncio.CancelledError] * 3


def test_max_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        batcher_of(Recorder(), max_size=0)
