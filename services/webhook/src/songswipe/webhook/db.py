"""Pooled connections whose transient faults become ``DatabaseUnavailable``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from songswipe.shared.db import Connection, Pool, is_transient
from songswipe.shared.errors import DatabaseUnavailable


@asynccontextmanager
async def pooled(pool: Pool) -> AsyncIterator[Connection]:
    """A connection from ``pool``; a lost or unreachable database is retriable."""
    try:
        async with pool.connection() as conn:
            yield conn
    except psycopg.Error as exc:
        if not is_transient(exc):
            raise
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
