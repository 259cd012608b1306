"""The finalizer's writes: final order statuses and ``failed_jobs`` rows.

Both are idempotent: an order leaves ``paid``/``generating`` once, and a
dead letter's id is the row's primary key.
"""

from __future__ import annotations

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
    status = OrderStatus.COMPLETED if settled.complete_count else OrderStatus.FAILED
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
