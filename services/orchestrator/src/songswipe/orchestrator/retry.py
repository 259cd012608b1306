"""Retrying transient faults in place, with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from itertools import chain, repeat
from typing import TypeVar
from uuid import UUID

from songswipe.shared.errors import TransientError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: About 8 s in all: long enough for a database failover or a pool hiccup,
#: short enough that other orders of the partition do not wait much longer.
BOUNDED_DELAYS_MS = (200, 400, 800, 1600, 3200)
MAX_DELAY_MS = 5000


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    order_id: UUID,
    delays_ms: tuple[int, ...] = BOUNDED_DELAYS_MS,
    forever: bool = False,
) -> T:
    """Run ``operation`` until it succeeds or the delays run out.

    A ``TransientError`` is retried after each delay (with up to 20 % jitter);
    the last one is raised. ``forever`` keeps retrying at ``MAX_DELAY_MS``,
    for work that cannot be put aside, such as a fan-out already half done.
    """
    delays = chain(delays_ms, repeat(MAX_DELAY_MS)) if forever else iter(delays_ms)
    attempt = 1
    while True:
        try:
            return await operation()
        except TransientError as exc:
            delay_ms = next(delays, None)
            if delay_ms is None:
                raise
            delay_ms = int(delay_ms * random.uniform(1.0, 1.2))
            logger.info(
                "%s failed for order_id=%s (attempt %d: %s), retrying in %d ms",
                what,
                order_id,
                attempt,
                exc,
                delay_ms,
            )
            await asyncio.sleep(delay_ms / 1000)
            attempt += 1
