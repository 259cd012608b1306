"""What a verified Stripe event does to the database and to Kafka.

A paid Checkout session becomes one order, decided by the unique session id,
and one ``generation.requested`` message. The order is committed before it is
published, so the orchestrator always finds it; it counts as handed on
(``published_at``) and its event as handled only after Kafka acknowledged the
message. A crash or a Kafka fault in between leaves the order ``paid`` with
``published_at`` null, which Stripe's redelivery and the sweep hand on again.

The delivery that created the order publishes it without holding a database
connection. Another delivery of the same session finds the order and waits
for it to be handed on; only once the creator's publish would have timed out
does it take the row lock and publish the order itself, so concurrent
duplicates publish once and a failed publish is retried by the redelivery.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaProducer
from psycopg.types.json import Jsonb

from songswipe.shared.db import Connection, Pool, Row
from songswipe.shared.errors import DatabaseUnavailable, KafkaUnavailable
from songswipe.shared.kafka import publish
from songswipe.shared.messages import GenerationRequested
from songswipe.shared.statuses import OrderStatus
from songswipe.shared.topics import Topics
from songswipe.webhook.db import pooled
from songswipe.webhook.errors import Unprocessable
from songswipe.webhook.events import (
    DEAD_LETTER_JOB_TYPE,
    Kind,
    Outcome,
    PaidCheckout,
    StripeEvent,
    dead_letter_id,
    paid_checkout,
    storable_event,
)
from songswipe.webhook.metrics import WebhookMetrics
from songswipe.webhook.settings import PUBLISH_GRACE_S

logger = logging.getLogger(__name__)

# One statement: was the event handled, does the customization belong to the
# user, and the order insert that the unique session id decides.
RECORD_ORDER = """
with handled as (
    select outcome from stripe_events where event_id = %(event_id)s
), customization as (
    select user_id from customizations where id = %(customization_id)s
), inserted as (
    insert into orders (
        user_id, customization_id, stripe_session_id, stripe_payment_intent_id,
        amount_total, currency, status
    )
    select
        %(user_id)s::uuid, %(customization_id)s::uuid, %(session_id)s::text,
        %(payment_intent_id)s::text, %(amount_total)s::bigint,
        %(currency)s::text, 'paid'
    from customization
    where customization.user_id = %(user_id)s::uuid
      and not exists (select 1 from handled)
    on conflict (stripe_session_id) do nothing
    returning id
)
select
    (select outcome from handled) as handled_outcome,
    (select user_id from customization) as customization_user_id,
    (select id from inserted) as created_order_id
"""

ORDER_COLUMNS = """
id, user_id, customization_id, stripe_session_id, status, published_at,
extract(epoch from now() - created_at)::float8 as age_s
"""

READ_ORDER = f"select {ORDER_COLUMNS} from orders where stripe_session_id = %s"

# Taken by a delivery that hands on an order its creator did not, so two
# such deliveries at once publish it once.
LOCK_ORDER = f"""
select {ORDER_COLUMNS} from orders where stripe_session_id = %s for update
"""

# After the ack: the order counts as handed on and the event as handled.
# The commit does not wait for the disk; were it lost in a database crash,
# the order would only be swept and published again.
RECORD_HANDLED = """
with commit_mode as (
    select set_config('synchronous_commit', 'off', true)
), published as (
    update orders set published_at = now()
    where id = %(order_id)s and status = 'paid' and published_at is null
)
insert into stripe_events (event_id, event_type, stripe_session_id, order_id, outcome)
select
    %(event_id)s::text, %(event_type)s::text, %(session_id)s::text,
    %(order_id)s::uuid, %(outcome)s::text
from commit_mode
on conflict (event_id) do nothing
"""

RECORD_EVENT = """
insert into stripe_events (event_id, event_type, stripe_session_id, order_id, outcome)
values (%s, %s, %s, %s, %s)
on conflict (event_id) do nothing
returning event_id
"""

DEAD_LETTER = """
insert into failed_jobs (
    id, order_id, job_type, event_data, error_message, source_topic, failed_at
)
values (%s, null, %s, %s, %s, null, now())
on conflict (id) do nothing
"""


#: How often a duplicate delivery looks whether the creator handed it on.
DUPLICATE_POLL_S = 0.02


@dataclass(frozen=True)
class Handled:
    outcome: Outcome
    order_id: UUID | None = None


def requested_message(order: Row) -> GenerationRequested:
    return GenerationRequested(
        order_id=order["id"],
        user_id=order["user_id"],
        customization_id=order["customization_id"],
        stripe_session_id=order["stripe_session_id"],
    )


class WebhookHandler:
    """Turns verified events into orders and ``generation.requested`` messages."""

    def __init__(
        self,
        pool: Pool,
        producer: AIOKafkaProducer,
        topics: Topics,
        metrics: WebhookMetrics,
        *,
        publish_timeout_s: float,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topics = topics
        self._metrics = metrics
        self._publish_timeout_s = publish_timeout_s

    async def handle(self, event: StripeEvent, body: bytes) -> Handled:
        """Act on ``event``; raise ``TransientError`` when Stripe should retry."""
        kind = event.kind
        if kind is Kind.OTHER:
            return Handled(Outcome.IGNORED)
        if kind is not Kind.PAID:
            outcome = (
                Outcome.AWAITING_PAYMENT
                if kind is Kind.UNPAID
                else Outcome.PAYMENT_FAILED
            )
            return await self._record_only(event, outcome)

        try:
            checkout = paid_checkout(event)
            return await self._record_order(event, checkout)
        except Unprocessable as problem:
            return await self._dead_letter(event, body, problem)

    async def _record_only(self, event: StripeEvent, outcome: Outcome) -> Handled:
        async with pooled(self._pool) as conn:
            cursor = await conn.execute(
                RECORD_EVENT,
                (event.id, event.type, event.session_id, None, outcome.value),
            )
            recorded = await cursor.fetchone()
        if recorded is None:
            self._metrics.duplicates.labels(kind="event").inc()
            return Handled(Outcome.DUPLICATE)
        logger.info(
            "Recorded %s, no generation starts event_id=%s event_type=%s",
            outcome.value,
            event.id,
            event.type,
        )
        return Handled(outcome)

    async def _record_order(
        self, event: StripeEvent, checkout: PaidCheckout
    ) -> Handled:
        params: dict[str, Any] = {
            "event_id": event.id,
            "customization_id": checkout.customization_id,
            "user_id": checkout.user_id,
            "session_id": checkout.session_id,
            "payment_intent_id": checkout.payment_intent_id,
            "amount_total": checkout.amount_total,
            "currency": checkout.currency,
        }
        async with pooled(self._pool) as conn:
            cursor = await conn.execute(RECORD_ORDER, params)
            row = await cursor.fetchone()
        assert row is not None, "the statement always returns one row"

        if row["handled_outcome"] is not None:
            self._metrics.duplicates.labels(kind="event").inc()
            logger.info(
                "Event already handled, answering 200 event_id=%s event_type=%s",
                event.id,
                event.type,
            )
            return Handled(Outcome.DUPLICATE)
        owner = row["customization_user_id"]
        if owner is None:
            raise Unprocessable(
                f"customization {checkout.customization_id} does not exist; the"
                f" checkout's metadata.customizationId must name a saved"
                f" customization"
            )
        if owner != checkout.user_id:
            raise Unprocessable(
                f"customization {checkout.customization_id} belongs to another"
                f" user than metadata.userId {checkout.user_id}; the checkout"
                f" must send the signed-in customer's own ids"
            )

        order_id = row["created_order_id"]
        if order_id is None:
            return await self._existing_order(event, checkout.session_id)

        self._metrics.orders_recorded.inc()
        order = {
            "id": order_id,
            "user_id": checkout.user_id,
            "customization_id": checkout.customization_id,
            "stripe_session_id": checkout.session_id,
        }
        await self._publish(order, event)
        async with pooled(self._pool) as conn:
            await self._record_handled(conn, order, event, Outcome.ORDER_RECORDED)
        return self._handed_on(Outcome.ORDER_RECORDED, order_id, event)

    async def _existing_order(self, event: StripeEvent, session_id: str) -> Handled:
        """Another delivery created the session's order: hand it on once."""
        window_s = self._publish_timeout_s + PUBLISH_GRACE_S
        while True:
            async with pooled(self._pool) as conn:
                cursor = await conn.execute(READ_ORDER, (session_id,))
                order = await cursor.fetchone()
                if order is None:
                    raise DatabaseUnavailable(
                        f"the order of session {session_id} vanished"
                    )
                if not _unpublished(order):
                    await self._record_handled(conn, order, event, Outcome.DUPLICATE)
                    return self._handed_on(Outcome.DUPLICATE, order["id"], event)
            if order["age_s"] >= window_s:
                return await self._take_over(event, session_id)
            await asyncio.sleep(min(DUPLICATE_POLL_S, window_s - order["age_s"]))

    async def _take_over(self, event: StripeEvent, session_id: str) -> Handled:
        """Publish an order whose creator failed or died, under the row lock."""
        async with pooled(self._pool) as conn, conn.transaction():
            cursor = await conn.execute(LOCK_ORDER, (session_id,))
            order = await cursor.fetchone()
            if order is None:
                raise DatabaseUnavailable(f"the order of session {session_id} vanished")
            outcome = Outcome.DUPLICATE
            if _unpublished(order):
                await self._publish(order, event)
                outcome = Outcome.REPUBLISHED
            await self._record_handled(conn, order, event, outcome)
        return self._handed_on(outcome, order["id"], event)

    async def _record_handled(
        self, conn: Connection, order: Row, event: StripeEvent, outcome: Outcome
    ) -> None:
        await conn.execute(
            RECORD_HANDLED,
            {
                "order_id": order["id"],
                "event_id": event.id,
                "event_type": event.type,
                "session_id": order["stripe_session_id"],
                "outcome": outcome.value,
            },
        )

    async def _publish(self, order: Row, event: StripeEvent) -> None:
        try:
            await publish(
                self._producer,
                self._topics.requested,
                requested_message(order),
                timeout_s=self._publish_timeout_s,
            )
        except KafkaUnavailable:
            logger.warning(
                "Kafka did not acknowledge generation.requested; the order stays"
                " paid and unpublished, answering 503 so Stripe will retry"
                " order_id=%s event_id=%s event_type=%s",
                order["id"],
                event.id,
                event.type,
            )
            raise

    def _handed_on(
        self, outcome: Outcome, order_id: UUID, event: StripeEvent
    ) -> Handled:
        if outcome is Outcome.DUPLICATE:
            self._metrics.duplicates.labels(kind="session").inc()
            logger.info(
                "Session already has a published order, answering 200"
                " order_id=%s event_id=%s event_type=%s",
                order_id,
                event.id,
                event.type,
            )
        else:
            logger.info(
                "Order %s and handed on to generation order_id=%s event_id=%s"
                " event_type=%s",
                "recorded" if outcome is Outcome.ORDER_RECORDED else "republished",
                order_id,
                event.id,
                event.type,
            )
        return Handled(outcome, order_id)

    async def _dead_letter(
        self, event: StripeEvent, body: bytes, problem: Unprocessable
    ) -> Handled:
        record_id = dead_letter_id(event.id)
        async with pooled(self._pool) as conn:
            await conn.execute(
                DEAD_LETTER,
                (
                    record_id,
                    DEAD_LETTER_JOB_TYPE,
                    Jsonb(storable_event(body)),
                    problem.message,
                ),
            )
        logger.warning(
            "Stripe event cannot become an order and was dead-lettered; fix: %s,"
            " then resend the event from the Stripe dashboard"
            " event_id=%s event_type=%s dead_letter_id=%s",
            problem.message,
            event.id,
            event.type,
            record_id,
        )
        return Handled(Outcome.DEAD_LETTERED)


def _unpublished(order: Row) -> bool:
    return order["published_at"] is None and order["status"] == OrderStatus.PAID
