"""Postgres access with psycopg 3 and an async pool.

Server-side prepared statements are off, so the same code runs behind
Supabase's transaction-mode pooler, where a statement prepared on one server
connection is gone on the next.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from songswipe.shared.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Connection = psycopg.AsyncConnection[Row]
Pool = AsyncConnectionPool[Connection]


def connection_kwargs() -> dict[str, Any]:
    return {"prepare_threshold": None, "row_factory": dict_row, "autocommit": True}


async def open_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 10
) -> Pool:
    """Open a pool and check one connection, or raise ``DatabaseUnavailable``."""
    pool: Pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(),
        connection_class=psycopg.AsyncConnection[Row],
        timeout=timeout_s,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except Exception as exc:
        await pool.close()
        raise DatabaseUnavailable(f"cannot reach the database: {exc}") from exc
    logger.info("Database pool open, max_size=%d", max_size)
    return pool


async def connect(database_url: str) -> Connection:
    """One connection outside a pool (scripts, the migration runner)."""
    try:
        return await psycopg.AsyncConnection.connect(
            database_url, **connection_kwargs()
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc}") from exc


def is_transient(exc: BaseException) -> bool:
    """Whether a psycopg error may clear by itself (connection lost, timeouts)."""
    # PoolTimeout and AdminShutdown are OperationalErrors too.
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected,
    )
