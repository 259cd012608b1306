"""A database fault while fanning out: the order waits, the others go first."""

from __future__ import annotations

import psycopg

from songswipe.orchestrator.app import Orchestrator
from songswipe.shared.db import Connection
from songswipe.shared.messages import GenerationRequested, VariantGenerate
from songswipe.shared.topics import Topics
from tests.finalizer.helpers import PausableProxy
from tests.orchestrator.conftest import SettingsFactory, opened
from tests.orchestrator.helpers import request_for
from tests.orchestrator.test_agents import fan_out, order_status, paid_order
from tests.support import consume, eventually


async def can_query(orchestrator: Orchestrator) -> bool:
    try:
        async with orchestrator.resources.pool.connection(timeout=1) as conn:
            await conn.execute("select 1")
    except psycopg.Error:
        return False
    return True


async def test_a_database_fault_puts_the_request_back_until_the_database_returns(
    db: Connection,
    topics: Topics,
    kafka_bootstrap: str,
    database_url: str,
    make_settings: SettingsFactory,
) -> None:
    order = await paid_order(db)
    target = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = PausableProxy(str(target["host"]), int(target["port"]))
    await proxy.start()
    settings = make_settings(
        database_url=database_url.replace(
            f"{target['host']}:{target['port']}", f"127.0.0.1:{proxy.port}"
        ),
        orchestrator_db_retry_budget_s=2,
    )

    try:
        async with opened(settings) as orchestrator:
            await proxy.pause()
            assert await fan_out(orchestrator, request_for(order)) == ["requeued"]
            requeued = await consume(
                kafka_bootstrap, topics.requested, GenerationRequested, expect=1
            )
            assert [r.order_id for r in requeued] == [order["id"]]
            assert (await order_status(db, order["id"]))["status"] == "paid"

            await proxy.resume()
            await eventually(
                lambda: can_query(orchestrator), timeout_s=60, what="pool reconnected"
            )
            assert await fan_out(orchestrator, requeued[0]) == ["fanned_out"]
    finally:
        await proxy.stop()

    assert (await order_status(db, order["id"]))["status"] == "generating"
    generates = await consume(
        kafka_bootstrap, topics.generate, VariantGenerate, expect=3
    )
    assert len(generates) == 3
