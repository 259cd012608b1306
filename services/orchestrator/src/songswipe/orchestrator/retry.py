"""Retrying transient faults in place, with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from songswipe.shared.errors import TransientError

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_MS = 200
MAX_DELAY_MS = 5000
#: Up to this fraction of each delay is added at random.
JITTER = 0.2


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    order_id: UUID,
    budget_s: float | None,
) -> T:
    """Run ``operation`` until it succeeds or ``budget_s`` is spent.

    A ``TransientError`` is retried after a delay that doubles from
    ``FIRST_DELAY_MS`` up to ``MAX_DELAY_MS``; the one that would overrun the
    budget is raised. ``budget_s=None`` retries for as long as it takes, for
    work that cannot be put aside, such as a fan-out already half published.
    """
    started_s = time.monotonic()
    delay_ms = FIRST_DELAY_MS
    attempt = 1
    while True:
        try:
            return await operation()
        except TransientError as exc:
            wait_ms = int(delay_ms * random.uniform(1.0, 1.0 + JITTER))
            spent_s = time.monotonic() - started_s
            if budget_s is not None and spent_s + wait_ms / 1000 > budget_s:
                raise
            logger.info(
                "%s failed for order_id=%s (attempt %d: %s), retrying in %d ms",
                what,
                order_id,
                attempt,
                exc,
                wait_ms,
            )
            await asyncio.sleep(wait_ms / 1000)
            delay_ms = min(delay_ms * 2, MAX_DELAY_MS)
            attempt += 1
