"""Several actors per agent: orders overlap, each order's messages still take
effect one at a time in the order they came (faust's test context), and no
commit passes a message still in flight (the orchestrator as a process).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

from songswipe.shared.db import Connection
from songswipe.shared.messages import GenerationSettled, Message, VariantGenerate
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import Topics
from tests.orchestrator.conftest import SettingsFactory, opened
from tests.orchestrator.helpers import (
    READY_LINE,
    OrchestratorProcess,
    committed_offset,
    completion,
    partition_for,
    request_for,
    send,
)
from tests.orchestrator.test_agents import order_status, paid_order
from tests.orchestrator.test_process import process_env
from tests.support import consume, eventually

COMPLETE = VariantStatus.COMPLETE
FAILED = VariantStatus.FAILED

Check = Callable[[], Awaitable[bool]]


async def put_all(agent: Any, messages: list[Message]) -> list[str]:
    """Hand every message to the agent at once; what it did, in finishing order."""
    for message in messages:
        await agent.put(message.to_bytes(), key=message.key, wait=False)

    async def finished() -> bool:
        return len(agent.results) == len(messages)

    await eventually(finished, what=f"{len(messages)} messages handled")
    return list(agent.results.values())


async def test_a_slow_order_does_not_hold_up_the_orders_behind_it(
    db: Connection, database_url: str, make_settings: SettingsFactory
) -> None:
    slow, fast = await paid_order(db), await paid_order(db)

    async def status(order: dict[str, Any]) -> str:
        return str((await order_status(db, order["id"]))["status"])

    async def fast_generating() -> bool:
        return await status(fast) == "generating"

    async def slow_generating() -> bool:
        return await status(slow) == "generating"

    async with opened(make_settings(orchestrator_concurrency=4)) as orchestrator:
        blocker = await psycopg.AsyncConnection.connect(database_url)
        try:
            # The slow order's fan-out waits on this row lock.
            await blocker.execute(
                "select 1 from orders where id = %s for update", (slow["id"],)
            )
            async with orchestrator.requested_agent.test_context() as agent:
                for order in (slow, fast):
                    request = request_for(order)
                    await agent.put(request.to_bytes(), key=request.key, wait=False)

                await eventually(fast_generating, what="the fast order generating")
                assert await status(slow) == "paid"
                await blocker.rollback()
                await eventually(slow_generating, what="the slow order generating")
        finally:
            await blocker.close()


async def test_many_orders_at_once_each_settle_once_in_message_order(
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
    make_settings: SettingsFactory,
) -> None:
    orders = [await paid_order(db) for _ in range(24)]
    order_ids: list[uuid.UUID] = [order["id"] for order in orders]
    # Per order, one after the other: the failed variant 2 is replayed and
    # completes, which only settles the order a second time if its failure
    # was recorded first.
    steps = [(1, COMPLETE), (2, FAILED), (3, COMPLETE), (2, COMPLETE)]

    async with opened(make_settings(orchestrator_concurrency=8)) as orchestrator:
        async with orchestrator.requested_agent.test_context() as agent:
            # Each request twice in a row: the copy must find the order in
            # the table, so the first must be finished by then.
            requested = await put_all(
                agent, [request_for(o) for o in orders for _ in range(2)]
            )
        async with orchestrator.completed_agent.test_context() as agent:
            completed = await put_all(
                agent,
                [
                    completion(order_id, n, status)
                    for order_id in order_ids
                    for n, status in steps
                ],
            )

    assert Counter(requested) == {"fanned_out": len(orders), "duplicate": len(orders)}
    assert Counter(completed) == {"recorded": 3 * len(orders), "recovered": len(orders)}
    generates = await consume(
        kafka_bootstrap, topics.generate, VariantGenerate, expect=3 * len(orders)
    )
    assert Counter(m.order_id for m in generates) == dict.fromkeys(order_ids, 3)
    settled = await consume(
        kafka_bootstrap, topics.settled, GenerationSettled, expect=2 * len(orders)
    )
    counts: dict[uuid.UUID, list[tuple[int, int]]] = defaultdict(list)
    for message in settled:
        counts[message.order_id].append((message.complete_count, message.failed_count))
    assert counts == {order_id: [(2, 1), (3, 0)] for order_id in order_ids}
    cursor = await db.execute(
        "select count(*) as n from orders where status = 'generating'"
    )
    assert await cursor.fetchone() == {"n": len(orders)}


async def test_a_crash_never_skips_a_request_still_in_flight(
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    """Requests behind a stuck one finish, but no commit passes the stuck one,
    so after a SIGKILL the next worker receives it again and fans it out.
    """
    orders = [await paid_order(db) for _ in range(12)]
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for order in orders:
        by_partition[partition_for(str(order["id"]).encode())].append(order)
    partition = max(by_partition, key=lambda p: len(by_partition[p]))
    first, stuck, *later = by_partition[partition][:4]
    probe_partition = next(p for p in by_partition if p != partition)
    probe = by_partition[probe_partition][0]
    group = topics.orchestrator_app_id
    env = process_env(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        workdir=tmp_path,
    ) | {"ORCHESTRATOR_DB_RETRY_BUDGET_S": "300", "DATABASE_POOL_MAX_SIZE": "4"}
    orchestrator = OrchestratorProcess(env, tmp_path / "orchestrator.log")

    async def committed(p: int) -> int:
        return await committed_offset(kafka_bootstrap, group, topics.requested, p)

    def committed_up_to(p: int, offset: int) -> Check:
        async def check() -> bool:
            return await committed(p) == offset

        return check

    def generating(order: dict[str, Any]) -> Check:
        async def check() -> bool:
            return (await order_status(db, order["id"]))["status"] == "generating"

        return check

    async def generates_of(order: dict[str, Any]) -> int:
        found = await consume(
            kafka_bootstrap,
            topics.generate,
            VariantGenerate,
            expect=len(orders) * 3,
            timeout_s=1,
            settle_s=0,
        )
        return sum(1 for m in found if m.order_id == order["id"])

    async def stuck_fanned_out() -> bool:
        return await generates_of(stuck) >= 3

    blocker = await psycopg.AsyncConnection.connect(database_url)
    orchestrator.start()
    try:
        await orchestrator.wait_for_log(READY_LINE)
        await send(kafka_bootstrap, topics.requested, request_for(first))
        await eventually(
            committed_up_to(partition, 1), what="the first request committed"
        )

        # The stuck order's fan-out waits on this row lock.
        await blocker.execute(
            "select 1 from orders where id = %s for update", (stuck["id"],)
        )
        await send(
            kafka_bootstrap,
            topics.requested,
            *(request_for(order) for order in (stuck, *later)),
        )
        for order in later:
            await eventually(generating(order), what="a later order generating")
        # A commit after the later requests finished: the probe's.
        await send(kafka_bootstrap, topics.requested, request_for(probe))
        await eventually(
            committed_up_to(probe_partition, 1), what="the probe request committed"
        )
        assert await committed(partition) == 1
        assert await generates_of(stuck) == 0

        orchestrator.kill()
        await blocker.rollback()
        orchestrator.start()
        await orchestrator.wait_for_log(READY_LINE)
        await eventually(
            stuck_fanned_out, timeout_s=30, what="the stuck order fanned out"
        )
        assert await generates_of(stuck) == 3
        assert orchestrator.terminate() == 0
    finally:
        await blocker.close()
        orchestrator.terminate()
