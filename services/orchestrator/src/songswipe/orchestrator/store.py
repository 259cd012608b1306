"""The orchestrator's reads and writes in Postgres, each one guarded.

Statuses only move forward (a trigger refuses anything else), so every
update says which statuses it may move from; running one twice is harmless.
The two statements every request runs (load it, start it) are batched across
the requests in flight together: one statement over arrays for all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from songswipe.shared.batching import Batcher
from songswipe.shared.db import Pool, Row, is_transient
from songswipe.shared.errors import DatabaseUnavailable, NotFound
from songswipe.shared.statuses import OrderStatus, VariantStatus

T = TypeVar("T")

#: Longest wait for a pooled connection plus its statements, per attempt.
STATEMENT_TIMEOUT_S = 5.0
#: The most requests one batched statement loads or starts.
BATCH_MAX_SIZE = 100

_LOAD_REQUESTS_SQL = """
select o.id as order_id,
       o.status as order_status,
       o.user_id as order_user_id,
       o.customization_id as order_customization_id,
       c.*
from unnest(%(order_ids)s::uuid[], %(customization_ids)s::uuid[])
     as r(order_id, customization_id)
join orders o on o.id = r.order_id
left join customizations c
  on c.id = o.customization_id and c.id = r.customization_id
"""

# One statement, so one round trip, and atomic like a transaction: a
# data-modifying CTE runs whether or not the outer query reads it.
_START_GENERATION_SQL = """
with started as (
  update orders set status = 'generating'
  where id = %(order_id)s and status in ('paid', 'generating')
)
insert into song_variants (order_id, variant_number)
select %(order_id)s, n from generate_series(1, 3) as n
on conflict (order_id, variant_number) do nothing
"""

# The batched form. An order another transaction holds locked is skipped, not
# waited for (its variants' foreign keys would wait too), and left out of the
# result: it runs alone with the statement above.
_START_GENERATIONS_SQL = """
with locked as (
  select id from orders where id = any(%(order_ids)s::uuid[])
  for update skip locked
), started as (
  update orders set status = 'generating'
  where id in (select id from locked) and status in ('paid', 'generating')
), created as (
  insert into song_variants (order_id, variant_number)
  select l.id, n from locked l cross join generate_series(1, 3) as n
  on conflict (order_id, variant_number) do nothing
)
select id as order_id from locked
"""

_FAIL_ORDER_SQL = """
update orders set status = 'failed', error = %(error)s, completed_at = now()
where id = %(order_id)s and status in ('paid', 'generating')
returning id
"""

_FAIL_VARIANT_SQL = """
update song_variants
set status = 'failed', error = %(error)s, completed_at = now()
where order_id = %(order_id)s and variant_number = %(variant)s
  and status in ('pending', 'generating')
returning status
"""

_TALLY_SQL = """
select o.status as order_status,
       count(v.id) filter (where v.status = 'complete') as complete,
       count(v.id) filter (where v.status = 'failed') as failed,
       count(v.id) as total
from orders o left join song_variants v on v.order_id = o.id
where o.id = %(order_id)s
group by o.status
"""

_VARIANT_STATUS_SQL = """
select status from song_variants
where order_id = %(order_id)s and variant_number = %(variant)s
"""


@dataclass(frozen=True)
class RequestContext:
    order_status: OrderStatus
    user_id: UUID
    #: ``None`` when missing, or not the one the order references.
    customization: Row | None
    order_customization_id: UUID


@dataclass(frozen=True)
class Tally:
    """An order's status and its variants' outcomes, as the database has them."""

    order_status: OrderStatus
    complete: int
    failed: int
    total: int

    @property
    def all_terminal(self) -> bool:
        return self.total > 0 and self.complete + self.failed == self.total


@dataclass(frozen=True)
class VariantOutcome:
    """A variant's status after a guarded update, and whether it moved."""

    status: VariantStatus | None
    moved: bool


async def _run(what: str, order_id: UUID, operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation`` within ``STATEMENT_TIMEOUT_S``.

    Faults that may clear by themselves (a lost connection, a server that
    does not answer) become ``DatabaseUnavailable``.
    """
    try:
        async with asyncio.timeout(STATEMENT_TIMEOUT_S):
            return await operation()
    except TimeoutError as exc:
        raise DatabaseUnavailable(
            f"{what}: no answer within {STATEMENT_TIMEOUT_S} s", order_id=order_id
        ) from exc
    except psycopg.Error as exc:
        if is_transient(exc):
            raise DatabaseUnavailable(f"{what}: {exc}", order_id=order_id) from exc
        raise


class RequestStore:
    """Load and start requests, batched across the requests in flight."""

    def __init__(
        self, pool: Callable[[], Pool], *, batch_max_size: int = BATCH_MAX_SIZE
    ) -> None:
        #: The pool opens when the worker starts, after this is built.
        self._pool = pool
        self._loads: Batcher[UUID, UUID, Row] = Batcher(
            self._load_all, self._load_one, max_size=batch_max_size
        )
        self._starts: Batcher[UUID, None, bool] = Batcher(
            self._start_all, self._start_one, max_size=batch_max_size
        )

    async def load(self, *, order_id: UUID, customization_id: UUID) -> RequestContext:
        """The order's status and its customization; ``NotFound`` without the
        order.

        The customization must be the one the order references: a request
        that names another one is as unusable as a customization that is gone.
        """
        row = await _run(
            "loading the order",
            order_id,
            lambda: self._loads(order_id, customization_id),
        )
        if row is None:
            raise NotFound(f"order {order_id} does not exist", order_id=order_id)
        customization = {k: v for k, v in row.items() if not k.startswith("order_")}
        return RequestContext(
            order_status=OrderStatus(row["order_status"]),
            user_id=row["order_user_id"],
            customization=customization if row["id"] is not None else None,
            order_customization_id=row["order_customization_id"],
        )

    async def start(self, order_id: UUID) -> None:
        """Mark the order ``generating`` and create its three ``pending``
        variants."""
        await _run(
            "starting the generation", order_id, lambda: self._starts(order_id, None)
        )

    async def _load_all(
        self, batch: Sequence[tuple[UUID, UUID]]
    ) -> dict[UUID, Row | None]:
        params = {
            "order_ids": [order_id for order_id, _ in batch],
            "customization_ids": [customization_id for _, customization_id in batch],
        }
        async with self._pool().connection() as conn:
            cursor = await conn.execute(_LOAD_REQUESTS_SQL, params)
            rows = await cursor.fetchall()
        found: dict[UUID, Row | None] = {row["order_id"]: row for row in rows}
        # Reading waits on no lock: an order not found does not exist.
        return {order_id: found.get(order_id) for order_id, _ in batch}

    async def _load_one(self, order_id: UUID, customization_id: UUID) -> Row | None:
        batch = [(order_id, customization_id)]
        return (await self._load_all(batch))[order_id]

    async def _start_all(
        self, batch: Sequence[tuple[UUID, None]]
    ) -> dict[UUID, bool | None]:
        params = {"order_ids": [order_id for order_id, _ in batch]}
        async with self._pool().connection() as conn:
            cursor = await conn.execute(_START_GENERATIONS_SQL, params)
            rows = await cursor.fetchall()
        return {row["order_id"]: True for row in rows}

    async def _start_one(self, order_id: UUID, _: None) -> bool:
        async with self._pool().connection() as conn:
            await conn.execute(_START_GENERATION_SQL, {"order_id": order_id})
        return True


async def fail_order(pool: Pool, order_id: UUID, error: str) -> bool:
    """Mark the order ``failed`` unless it already finished; say if it moved."""

    async def fail() -> bool:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                _FAIL_ORDER_SQL, {"order_id": order_id, "error": error}
            )
            return await cursor.fetchone() is not None

    return await _run("failing the order", order_id, fail)


async def tally(pool: Pool, order_id: UUID) -> Tally | None:
    """The order's variants by outcome; ``None`` when the order does not exist."""

    async def count() -> Row | None:
        async with pool.connection() as conn:
            cursor = await conn.execute(_TALLY_SQL, {"order_id": order_id})
            return await cursor.fetchone()

    row = await _run("counting the variants", order_id, count)
    if row is None:
        return None
    return Tally(
        order_status=OrderStatus(row["order_status"]),
        complete=row["complete"],
        failed=row["failed"],
        total=row["total"],
    )


async def fail_variant(
    pool: Pool, order_id: UUID, variant: int, error: str
) -> VariantOutcome:
    """Mark an unfinished variant ``failed``.

    A variant the generator finished in the meantime keeps its outcome, which
    is returned unmoved (status ``None`` when the row does not exist).
    """
    params: dict[str, Any] = {"order_id": order_id, "variant": variant, "error": error}

    async def fail() -> VariantOutcome:
        async with pool.connection() as conn:
            cursor = await conn.execute(_FAIL_VARIANT_SQL, params)
            if await cursor.fetchone() is not None:
                return VariantOutcome(VariantStatus.FAILED, moved=True)
            cursor = await conn.execute(_VARIANT_STATUS_SQL, params)
            row = await cursor.fetchone()
        status = VariantStatus(row["status"]) if row is not None else None
        return VariantOutcome(status, moved=False)

    return await _run("failing the variant", order_id, fail)
