"""The ``song_variants`` rows the generator moves forward.

Every update is guarded by the statuses it may move from, so a late or
duplicated message can never move a variant back (the database refuses
that too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from songswipe.shared.db import Pool, Row, is_transient
from songswipe.shared.errors import DatabaseUnavailable, PermanentError
from songswipe.shared.statuses import VariantStatus

ERROR_MAX_CHARS = 2_000

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


class Variants:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def get(self, order_id: UUID, variant: int) -> Variant | None:
        return await self._one(_SELECT, {"order_id": order_id, "variant": variant})

    async def start_attempt(
        self, order_id: UUID, variant: int, attempt: int
    ) -> Variant | None:
        """Mark the variant ``generating`` by ``attempt``; ``None`` when it may
        not start (finished already, or a later attempt is running)."""
        params = {"order_id": order_id, "variant": variant, "attempt": attempt}
        return await self._one(_START_ATTEMPT, params)

    async def complete(
        self, order_id: UUID, variant: int, storage_path: str
    ) -> Variant | None:
        """Record the song; ``None`` when the variant had already finished."""
        params = {"order_id": order_id, "variant": variant, "path": storage_path}
        return await self._one(_COMPLETE, params)

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
            if is_transient(exc):
                raise DatabaseUnavailable(
                    f"song_variants query failed: {exc!r}",
                    order_id=params["order_id"],
                    variant=params["variant"],
                ) from exc
            raise PermanentError(
                f"song_variants query refused: {exc!r}",
                order_id=params["order_id"],
                variant=params["variant"],
            ) from exc
        return Variant.from_row(row) if row is not None else None
