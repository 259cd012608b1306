"""The sweep: hand on again every order left ``paid`` for too long.

Stripe's redelivery normally hands on an order whose publish failed; the
sweep covers what redelivery cannot: a process killed between the commit and
the publish of a delivery Stripe already saw answered, or an order published
but never picked up. Rows are claimed with ``skip locked``, so several
webhook processes sweep side by side without publishing an order twice, and
an order a delivery is publishing right now is left to that delivery.
Downstream is idempotent on the order id, so a republished order is safe.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from uuid import UUID

from aiokafka import AIOKafkaProducer

from songswipe.shared.db import Pool, Row
from songswipe.shared.errors import KafkaUnavailable, TransientError
from songswipe.shared.kafka import publish
from songswipe.shared.topics import Topics
from songswipe.webhook.db import pooled
from songswipe.webhook.handler import requested_message
from songswipe.webhook.metrics import WebhookMetrics

logger = logging.getLogger(__name__)

CLAIM_UNPUBLISHED = """
select id, user_id, customization_id, stripe_session_id, published_at
from orders
where status = 'paid' and published_at is null
  and created_at < now() - make_interval(secs => %(after_s)s)
order by created_at
limit %(limit)s
for update skip locked
"""

CLAIM_NOT_PICKED_UP = """
select id, user_id, customization_id, stripe_session_id, published_at
from orders
where status = 'paid'
  and published_at < now() - make_interval(secs => %(after_s)s)
order by published_at
limit %(limit)s
for update skip locked
"""

MARK_PUBLISHED = "update orders set published_at = now() where id = any(%s)"


@dataclass(frozen=True)
class SweepPolicy:
    #: An unpublished order younger than this may still be in a delivery.
    after_s: float = 120.0
    #: A published order still ``paid`` after this was not picked up.
    republish_after_s: float = 1800.0
    batch_size: int = 100
    publish_timeout_s: float = 5.0


async def sweep(
    pool: Pool,
    producer: AIOKafkaProducer,
    topics: Topics,
    policy: SweepPolicy,
    metrics: WebhookMetrics | None = None,
) -> int:
    """Republish every order left ``paid``; returns how many were handed on.

    Raises ``TransientError`` when the database or Kafka is unavailable; the
    orders acknowledged before that stay marked as handed on.
    """
    total = 0
    while True:
        claimed, acked = await _sweep_batch(pool, producer, topics, policy)
        total += acked
        if metrics is not None:
            metrics.sweep_republished.inc(acked)
        if claimed < policy.batch_size:
            break
    if total:
        logger.warning(
            "Sweep handed on %d order(s) left paid; if this repeats, check that"
            " the orchestrator consumes generation.requested",
            total,
        )
    return total


async def _sweep_batch(
    pool: Pool, producer: AIOKafkaProducer, topics: Topics, policy: SweepPolicy
) -> tuple[int, int]:
    async with pooled(pool) as conn, conn.transaction():
        cursor = await conn.execute(
            CLAIM_UNPUBLISHED,
            {"after_s": policy.after_s, "limit": policy.batch_size},
        )
        orders = await cursor.fetchall()
        if len(orders) < policy.batch_size:
            cursor = await conn.execute(
                CLAIM_NOT_PICKED_UP,
                {
                    "after_s": policy.republish_after_s,
                    "limit": policy.batch_size - len(orders),
                },
            )
            orders += await cursor.fetchall()
        if not orders:
            return 0, 0

        results = await asyncio.gather(
            *(_publish(producer, topics, order, policy) for order in orders),
            return_exceptions=True,
        )
        acked: list[UUID] = []
        for order, result in zip(orders, results, strict=True):
            if isinstance(result, KafkaUnavailable):
                continue
            if isinstance(result, BaseException):
                raise result
            acked.append(order["id"])
        if acked:
            await conn.execute(MARK_PUBLISHED, (acked,))

    failed = len(orders) - len(acked)
    if failed:
        raise KafkaUnavailable(
            f"Kafka did not acknowledge {failed} of {len(orders)} swept orders"
        )
    return len(orders), len(acked)


async def _publish(
    producer: AIOKafkaProducer, topics: Topics, order: Row, policy: SweepPolicy
) -> None:
    await publish(
        producer,
        topics.requested,
        requested_message(order),
        timeout_s=policy.publish_timeout_s,
    )
    logger.info(
        "Sweep handed on an order left paid order_id=%s published_before=%s",
        order["id"],
        order["published_at"] is not None,
    )


async def run_sweeper(
    pool: Pool,
    producer: AIOKafkaProducer,
    topics: Topics,
    policy: SweepPolicy,
    metrics: WebhookMetrics,
    *,
    interval_s: float,
) -> None:
    """Sweep every ``interval_s`` until cancelled; a failed sweep waits a round."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await sweep(pool, producer, topics, policy, metrics)
        except TransientError as exc:
            logger.warning(
                "Sweep stopped: %s; sweeping again in %.0f s", exc, interval_s
            )
        except Exception:
            logger.exception(
                "Sweep failed unexpectedly; sweeping again in %.0f s", interval_s
            )
