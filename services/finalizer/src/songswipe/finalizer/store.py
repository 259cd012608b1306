"""The finalizer's writes: final order statuses and ``failed_jobs`` rows.

Both are idempotent: an order leaves ``paid``/``generating`` once, and a
dead letter's id is the row's primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from uuid import UUID

from psycopg.types.json import Jsonb

from songswipe.shared.db import Connection
from songswipe.shared.messages import DeadLetter, GenerationSettled
from songswipe.shared.statuses import OrderStatus

_SETTLE_SQL = """
update orders
set status = %(status)s,
    completed_at = coalesce(completed_at, %(settled_at)s),
    error = case when %(status)s = 'failed'
                 then coalesce(error, %(error)s) else error end
where id = %(order_id)s and status in ('paid', 'generating')
returning id
"""

_ORDER_STATUS_SQL = "select status from orders where id = %s"

# The batched form of ``_SETTLE_SQL``. An order another transaction holds
# locked is skipped, not waited for, and left out of the result (it settles
# alone with the statement above); every other order comes back, with
# whether it moved and whether it exists.
_SETTLE_MANY_SQL = """
with settled as (
  select * from unnest(%(order_ids)s::uuid[], %(statuses)s::text[],
                       %(settled_ats)s::timestamptz[])
         as s(order_id, status, settled_at)
), locked as (
  select o.id from orders o join settled s on o.id = s.order_id
  for update of o skip locked
), moved as (
  update orders o
  set status = s.status,
      completed_at = coalesce(o.completed_at, s.settled_at),
      error = case when s.status = 'failed'
                   then coalesce(o.error, %(error)s) else o.error end
  from settled s
  where o.id = s.order_id and o.id in (select id from locked)
    and o.status in ('paid', 'generating')
  returning o.id
)
select s.order_id, s.status, o.id is not null as found, m.id is not null as moved
from settled s
left join orders o on o.id = s.order_id
left join moved m on m.id = s.order_id
where o.id is null or o.id in (select id from locked)
"""

_STORE_DEAD_LETTER_SQL = """
insert into failed_jobs (id, order_id, job_type, event_data, error_message,
                         error_stack, retry_count, source_topic, failed_at)
values (%(id)s, %(order_id)s, %(job_type)s, %(event_data)s, %(error_message)s,
        %(error_stack)s, %(retry_count)s, %(source_topic)s, %(failed_at)s)
on conflict (id) do nothing
returning id
"""

# A dead letter may leave every variant of an order terminal after the order
# was settled and reopened (a replay that failed again): settle it from the
# rows, since no settlement will come from the orchestrator for it.
_SETTLE_FROM_VARIANTS_SQL = """
update orders o
set status = case when v.complete > 0 then 'completed' else 'failed' end,
    completed_at = now(),
    error = case when v.complete > 0 then o.error
                 else coalesce(o.error, %(error)s) end
from (
  select count(*) filter (where status = 'complete') as complete,
         count(*) filter (where status in ('complete', 'failed')) as terminal,
         count(*) as total
  from song_variants where order_id = %(order_id)s
) v
where o.id = %(order_id)s and o.status = 'generating'
  and v.total = 3 and v.terminal = 3
returning o.status
"""

NO_VARIANT_ERROR = "no variant could be generated"


class Settlement(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    #: Already settled: a duplicate, or a late message.
    UNCHANGED = "unchanged"
    MISSING = "missing"


async def settle_order(conn: Connection, settled: GenerationSettled) -> Settlement:
    """Move the order to its final status, forward only."""
    status = _final_status(settled)
    cursor = await conn.execute(
        _SETTLE_SQL,
        {
            "order_id": settled.order_id,
            "status": status.value,
            "settled_at": settled.settled_at,
            "error": NO_VARIANT_ERROR,
        },
    )
    if await cursor.fetchone() is not None:
        return Settlement(status.value)

    cursor = await conn.execute(_ORDER_STATUS_SQL, (settled.order_id,))
    row = await cursor.fetchone()
    return Settlement.MISSING if row is None else Settlement.UNCHANGED


async def settle_orders(
    conn: Connection, batch: Sequence[GenerationSettled]
) -> dict[UUID, Settlement]:
    """``settle_order`` for many orders in one statement; an order another
    transaction holds locked is left out, for ``settle_order`` alone."""
    params = {
        "order_ids": [settled.order_id for settled in batch],
        "statuses": [_final_status(settled).value for settled in batch],
        "settled_ats": [settled.settled_at for settled in batch],
        "error": NO_VARIANT_ERROR,
    }
    cursor = await conn.execute(_SETTLE_MANY_SQL, params)
    outcomes = {}
    for row in await cursor.fetchall():
        if not row["found"]:
            outcomes[row["order_id"]] = Settlement.MISSING
        elif row["moved"]:
            outcomes[row["order_id"]] = Settlement(row["status"])
        else:
            outcomes[row["order_id"]] = Settlement.UNCHANGED
    return outcomes


def _final_status(settled: GenerationSettled) -> OrderStatus:
    return OrderStatus.COMPLETED if settled.complete_count else OrderStatus.FAILED


async def store_dead_letter(conn: Connection, letter: DeadLetter) -> bool:
    """Insert the ``failed_jobs`` row; ``False`` when it is already there."""
    cursor = await conn.execute(
        _STORE_DEAD_LETTER_SQL,
        {
            "id": letter.message_id,
            "order_id": letter.order_id,
            "job_type": letter.job_type,
            "event_data": Jsonb(letter.payload),
            "error_message": f"{letter.error_type}: {letter.error_message}",
            "error_stack": letter.error_stack,
            "retry_count": letter.attempt_count,
            "source_topic": letter.source_topic,
            "failed_at": letter.failed_at,
        },
    )
    return await cursor.fetchone() is not None


async def settle_from_variants(conn: Connection, order_id: UUID) -> Settlement | None:
    """Settle a ``generating`` order whose three variants are all terminal."""
    cursor = await conn.execute(
        _SETTLE_FROM_VARIANTS_SQL, {"order_id": order_id, "error": NO_VARIANT_ERROR}
    )
    row = await cursor.fetchone()
    return Settlement(row["status"]) if row is not None else None
