"""The ``song_variants`` rows the generator moves forward.

Every update is guarded by the statuses it may move from, so a late or
duplicated message can never move a variant back (the database refuses
that too). The two updates every variant makes (start, complete) run in
batches: the calls that arrive together share one statement over arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from songswipe.shared.batching import Batcher
from songswipe.shared.db import Pool, Row, is_transient
from songswipe.shared.errors import (
    DatabaseUnavailable,
    PermanentError,
    PipelineError,
)
from songswipe.shared.statuses import VariantStatus

ERROR_MAX_CHARS = 2_000
#: The most variants one batched statement moves.
BATCH_MAX_SIZE = 100

_COLUMNS = "status, attempt_count, storage_path, error, completed_at"

_START_ATTEMPT = f"""
update song_variants
   set status = 'generating',
       attempt_count = %(attempt)s,
       started_at = coalesce(started_at, now()),
       error = null
 where order_id = %(order_id)s
   and variant_number = %(variant)s
   and (status = 'pending'
        or (status = 'generating' and attempt_count <= %(attempt)s))
returning {_COLUMNS}
"""

_COMPLETE = f"""
update song_variants
   set status = 'complete', storage_path = %(path)s, completed_at = now(),
       error = null
 where order_id = %(order_id)s
   and variant_number = %(variant)s
   and status in ('pending', 'generating')
returning {_COLUMNS}
"""

# The batched forms. Rows another transaction holds locked are skipped, not
# waited for, and left out of the result: those run alone with the statements
# above. A row locked here but refused by the guard comes back with a null
# status: the variant may not move.
_LOCKED = """
with batch as (
  select * from unnest(%(order_ids)s::uuid[], %(variants)s::int[], {values})
         as b(order_id, variant, value)
), locked as (
  select v.id, v.order_id, v.variant_number, batch.value
    from song_variants v
    join batch on v.order_id = batch.order_id and v.variant_number = batch.variant
     for update of v skip locked
), moved as (
  {update}
  returning v.id, v.status, v.attempt_count, v.storage_path, v.error,
            v.completed_at
)
select l.order_id, l.variant_number, m.status, m.attempt_count, m.storage_path,
       m.error, m.completed_at
  from locked l left join moved m on m.id = l.id
"""

_START_ATTEMPTS = _LOCKED.format(
    values="%(values)s::int[]",
    update="""update song_variants v
     set status = 'generating',
         attempt_count = l.value,
         started_at = coalesce(v.started_at, now()),
         error = null
    from locked l
   where v.id = l.id
     and (v.status = 'pending'
          or (v.status = 'generating' and v.attempt_count <= l.value))""",
)

_COMPLETE_ALL = _LOCKED.format(
    values="%(values)s::text[]",
    update="""update song_variants v
     set status = 'complete', storage_path = l.value, completed_at = now(),
         error = null
    from locked l
   where v.id = l.id
     and v.status in ('pending', 'generating')""",
)

_FAIL = f"""
update song_variants
   set status = 'failed', error = %(error)s, completed_at = now(),
       attempt_count = greatest(attempt_count, %(attempt)s)
 where order_id = %(order_id)s
   and variant_number = %(variant)s
   and status in ('pending', 'generating')
returning {_COLUMNS}
"""

_SELECT = f"""
select {_COLUMNS} from song_variants
 where order_id = %(order_id)s and variant_number = %(variant)s
"""


@dataclass(frozen=True)
class Variant:
    status: VariantStatus
    attempt_count: int
    storage_path: str | None
    error: str | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> Variant:
        return cls(
            status=VariantStatus(row["status"]),
            attempt_count=row["attempt_count"],
            storage_path=row["storage_path"],
            error=row["error"],
            completed_at=row["completed_at"],
        )


#: A variant's key: (order id, variant number).
Key = tuple[UUID, int]


class Variants:
    def __init__(self, pool: Pool, *, batch_max_size: int = BATCH_MAX_SIZE) -> None:
        self._pool = pool
        self._start: Batcher[Key, int, Variant] = Batcher(
            self._start_all, self._start_one, max_size=batch_max_size
        )
        self._complete: Batcher[Key, str, Variant] = Batcher(
            self._complete_all, self._complete_one, max_size=batch_max_size
        )

    async def get(self, order_id: UUID, variant: int) -> Variant | None:
        return await self._one(_SELECT, {"order_id": order_id, "variant": variant})

    async def start_attempt(
        self, order_id: UUID, variant: int, attempt: int
    ) -> Variant | None:
        """Mark the variant ``generating`` by ``attempt``; ``None`` when it may
        not start (finished already, or a later attempt is running)."""
        return await self._batched(self._start, (order_id, variant), attempt)

    async def complete(
        self, order_id: UUID, variant: int, storage_path: str
    ) -> Variant | None:
        """Record the song; ``None`` when the variant had already finished."""
        return await self._batched(self._complete, (order_id, variant), storage_path)

    async def fail(
        self, order_id: UUID, variant: int, attempt: int, error: str
    ) -> Variant | None:
        """Record the failure; ``None`` when the variant had already finished."""
        params = {
            "order_id": order_id,
            "variant": variant,
            "attempt": attempt,
            "error": error[:ERROR_MAX_CHARS],
        }
        return await self._one(_FAIL, params)

    async def _one(self, query: str, params: dict[str, Any]) -> Variant | None:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(query, params)
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise _pipeline_error(exc, params["order_id"], params["variant"]) from exc
        return Variant.from_row(row) if row is not None else None

    async def _batched(
        self, batcher: Batcher[Key, Any, Variant], key: Key, argument: object
    ) -> Variant | None:
        try:
            return await batcher(key, argument)
        except psycopg.Error as exc:
            raise _pipeline_error(exc, *key) from exc

    async def _start_all(
        self, batch: Sequence[tuple[Key, int]]
    ) -> dict[Key, Variant | None]:
        return await self._many(_START_ATTEMPTS, batch)

    async def _start_one(self, key: Key, attempt: int) -> Variant | None:
        order_id, variant = key
        params = {"order_id": order_id, "variant": variant, "attempt": attempt}
        return await self._one(_START_ATTEMPT, params)

    async def _complete_all(
        self, batch: Sequence[tuple[Key, str]]
    ) -> dict[Key, Variant | None]:
        return await self._many(_COMPLETE_ALL, batch)

    async def _complete_one(self, key: Key, storage_path: str) -> Variant | None:
        order_id, variant = key
        params = {"order_id": order_id, "variant": variant, "path": storage_path}
        return await self._one(_COMPLETE, params)

    async def _many(
        self, query: str, batch: Sequence[tuple[Key, object]]
    ) -> dict[Key, Variant | None]:
        params = {
            "order_ids": [order_id for (order_id, _), _ in batch],
            "variants": [variant for (_, variant), _ in batch],
            "values": [value for _, value in batch],
        }
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
        return {
            (row["order_id"], row["variant_number"]): (
                Variant.from_row(row) if row["status"] is not None else None
            )
            for row in rows
        }


def _pipeline_error(exc: psycopg.Error, order_id: UUID, variant: int) -> PipelineError:
    """A database fault as the pipeline's error: retriable when transient."""
    if is_transient(exc):
        return DatabaseUnavailable(
            f"song_variants query failed: {exc!r}", order_id=order_id, variant=variant
        )
    return PermanentError(
        f"song_variants query refused: {exc!r}", order_id=order_id, variant=variant
    )
