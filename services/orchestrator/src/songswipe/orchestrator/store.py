"""The orchestrator's reads and writes in Postgres, each one guarded.

Statuses only move forward (a trigger refuses anything else), so every
update says which statuses it may move from; running one twice is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from songswipe.shared.db import Pool, Row, is_transient
from songswipe.shared.errors import DatabaseUnavailable, NotFound
from songswipe.shared.statuses import OrderStatus, VariantStatus

T = TypeVar("T")

#: Longest wait for a pooled connection plus its statements, per attempt.
STATEMENT_TIMEOUT_S = 5.0

_LOAD_REQUEST_SQL = """
select o.status as order_status,
       o.user_id as order_user_id,
       o.customization_id as order_customization_id,
       c.*
from orders o
left join customizations c
  on c.id = o.customization_id and c.id = %(customization_id)s
where o.id = %(order_id)s
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
        return await asyncio.wait_for(operation(), timeout=STATEMENT_TIMEOUT_S)
    except TimeoutError as exc:
        raise DatabaseUnavailable(
            f"{what}: no answer within {STATEMENT_TIMEOUT_S} s", order_id=order_id
        ) from exc
    except psycopg.Error as exc:
        if is_transient(exc):
            raise DatabaseUnavailable(f"{what}: {exc}", order_id=order_id) from exc
        raise


async def load_request(
    pool: Pool, *, order_id: UUID, customization_id: UUID
) -> RequestContext:
    """The order's status and its customization; ``NotFound`` without the order.

    The customization must be the one the order references: a request that
    names another one is as unusable as a customization that is gone.
    """

    async def load() -> Row | None:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                _LOAD_REQUEST_SQL,
                {"order_id": order_id, "customization_id": customization_id},
            )
            return await cursor.fetchone()

    row = await _run("loading the order", order_id, load)
    if row is None:
        raise NotFound(f"order {order_id} does not exist", order_id=order_id)
    customization = {k: v for k, v in row.items() if not k.startswith("order_")}
    return RequestContext(
        order_status=OrderStatus(row["order_status"]),
        user_id=row["order_user_id"],
        customization=customization if row["id"] is not None else None,
        order_customization_id=row["order_customization_id"],
    )


async def start_generation(pool: Pool, order_id: UUID) -> None:
    """Mark the order ``generating`` and create its three ``pending`` variants."""

    async def start() -> None:
        async with pool.connection() as conn:
            await conn.execute(_START_GENERATION_SQL, {"order_id": order_id})

    await _run("starting the generation", order_id, start)


async def fail_order(pool: Pool, order_id: UUID, error: str) -> bool:
    """Mark the order ``failed`` unless it already finished; say if it moved."""

    async def fail() -> bool:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                _FAIL_ORDER_SQL, {"order_id": order_id, "error": error}
            )
            return await cursor.fetchone() is not None

    return await _run("failing the order", order_id, fail)


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
