"""The orchestrator: order state in a faust table, fan-out, settlement, sweeps.

The table is keyed by the order id (the same bytes as every message key) and
backed by a compacted changelog co-partitioned with ``generation.requested``
and ``variant.completed``, so the worker that owns an order's messages owns
its state too. Writes go through the producer's partitioner
(``use_partitioner``), which puts each key in the changelog partition its
messages use and lets the sweep timer write outside a stream.

Crash safety, at least once: faust commits a source offset only after the
agent finished the event and after flushing the producer that carries the
table's changelog. Every side effect happens before the table records it:

- killed after the fan-out but before the table write reached the
  changelog: the request comes again and fans out again. The generator
  treats a variant already ``complete`` as done, and the database writes
  are guarded, so the repeat costs messages, not songs;
- killed after the table write: the recovered table says the order is
  known, and the redelivered request is a duplicate;
- killed after ``generation.settled`` but before the table says so: the
  completion comes again and the order is settled again, with the same
  counts; the finalizer's update is forward-only, so the order settles once.

After a restart or a rebalance, faust can drop the first events it fetches
(see ``_on_table_recovered``) and then commit past the gap, losing them; the
flow is held while that can happen.

Concurrency: each agent runs ``orchestrator_concurrency`` actors, so one
order's database and Kafka round trips no longer hold up the orders behind
it. Three things keep that as safe as one actor:

- commits: faust's own acking under concurrency can commit past a message
  still in flight (see ``acks``), so the agents ack manually, in offset order
  per partition; faust commits only offsets whose message and every earlier
  one are finished, exactly as with one actor;
- one order's events: ``KeyedLocks`` serialise them, and they queue on the
  lock in the order the partition delivered them (an actor takes an event
  and waits on its lock without yielding to the event loop in between;
  ``asyncio.Lock`` wakes waiters first come, first served);
- the table: it is a plain dict in this one event loop, so no write is ever
  torn; every read-modify-write of one order happens under its lock, so its
  changelog records follow each other as its state did, each in the one
  partition its key maps to.

Work an order cannot finish (a missing customization, a variant that never
completes) goes to ``generation.dlq`` under an id derived from the order,
so publishing it twice still stores one ``failed_jobs`` row.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import faust

from songswipe.orchestrator import metrics, store
from songswipe.orchestrator.acks import InOrderAcks
from songswipe.orchestrator.locks import KeyedLocks
from songswipe.orchestrator.resources import Resources
from songswipe.orchestrator.retry import retry_transient
from songswipe.orchestrator.settings import OrchestratorSettings
from songswipe.orchestrator.state import (
    VARIANT_NUMBERS,
    Change,
    OrderState,
    StoredOrder,
)
from songswipe.shared import topics as topic_names
from songswipe.shared.errors import DatabaseUnavailable, MalformedMessage, NotFound
from songswipe.shared.kafka import publish
from songswipe.shared.messages import (
    DeadLetter,
    GenerationRequested,
    GenerationSettled,
    Message,
    SongBrief,
    VariantCompleted,
)
from songswipe.shared.statuses import OrderStatus, VariantStatus

logger = logging.getLogger(__name__)

#: Namespace of the ids the orchestrator derives (dead letters, settlements).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "orchestrator.songswipe")
#: The ``error_type`` of a variant failed by the generation timeout.
GENERATION_TIMEOUT = "GenerationTimeout"


def broker_urls(bootstrap_servers: str) -> list[str]:
    """``host:port,host:port`` as faust's broker URLs."""
    return [
        f"kafka://{server.strip()}"
        for server in bootstrap_servers.split(",")
        if server.strip()
    ]


def create_app(settings: OrchestratorSettings) -> Any:
    """The faust app: the table in memory, rebuilt from its changelog at start."""
    session_timeout_s = settings.orchestrator_session_timeout_s
    return faust.App(
        settings.topics.orchestrator_app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        # Rebuilt from the changelog at start, so nothing on disk can go stale.
        store="memory://",
        topic_partitions=settings.kafka_partitions,
        # ``ensure_topics`` creates every topic first; declaring the changelog
        # again finds it there and loads its metadata into faust's producer,
        # which the partitioner needs before the first table write.
        topic_allow_declare=True,
        topic_disable_leader=True,
        datadir=str(settings.orchestrator_data_dir),
        web_enabled=False,
        autodiscover=False,
        processing_guarantee="at_least_once",
        producer_linger=settings.orchestrator_kafka_linger_ms / 1000,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=max(1.0, session_timeout_s / 10),
    )


class Orchestrator:
    """The faust app with its table, its two agents and the sweep timer."""

    def __init__(
        self, settings: OrchestratorSettings, resources: Resources | None = None
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.resources = resources or Resources(settings)
        self._locks = KeyedLocks()
        self._acks = InOrderAcks()
        self._db_budget_s = settings.orchestrator_db_retry_budget_s
        self._requests = store.RequestStore(lambda: self.resources.pool)

        partitions = settings.kafka_partitions
        self.app = create_app(settings)
        self.table = self.app.Table(
            topic_names.ORDER_STATE_TABLE,
            partitions=partitions,
            key_type=bytes,
            use_partitioner=True,
            help="Generation state per order id",
            on_recover=self._on_table_recovered,
        )
        requested = self.app.topic(
            self.topics.requested,
            partitions=partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        completed = self.app.topic(
            self.topics.completed,
            partitions=partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        concurrency = settings.orchestrator_concurrency
        self.requested_agent = self.app.agent(
            requested, name="requested", concurrency=concurrency
        )(self._requested_stream)
        self.completed_agent = self.app.agent(
            completed, name="completed", concurrency=concurrency
        )(self._completed_stream)
        self.app.timer(settings.orchestrator_sweep_interval_s, name="sweep")(
            self._sweep_timer
        )

    async def _on_table_recovered(self) -> None:
        # Next, faust resumes the source partitions, seeks them to their
        # committed offsets and only then resumes flow control, which empties
        # every stream queue: an event fetched in between would be dropped
        # unacked, and faust commits past a one-offset hole at the head of
        # its acked offsets. Suspended until then, the conductor holds such an
        # event and queues it after the emptying.
        self.app.flow_control.suspend()
        logger.info(
            "Order table recovered from %s: %d orders; consuming partitions %s",
            self.topics.order_state_changelog,
            len(self.table),
            sorted(self.owned_partitions()),
        )

    # Agents: each actor yields what it did with every message, which faust's
    # test context records.

    async def _requested_stream(self, stream: Any) -> AsyncIterator[str]:
        async for outcome in self._each_event(stream, self._handle_requested):
            yield outcome

    async def _completed_stream(self, stream: Any) -> AsyncIterator[str]:
        async for outcome in self._each_event(stream, self._handle_completed):
            yield outcome

    async def _handle_requested(self, event: Any) -> str:
        message = event.message
        return await self.on_requested(event.value, message.partition, message.key)

    async def _handle_completed(self, event: Any) -> str:
        return await self.on_completed(event.value, event.message.key)

    async def _each_event(
        self, stream: Any, handle: Callable[[Any], Awaitable[str]]
    ) -> AsyncIterator[str]:
        """Handle every event of one actor's stream; ack them in offset order.

        An event whose actor is cancelled stays unacked, so it and the events
        behind it in its partition are delivered again after a restart.
        """
        manual = stream.noack()
        async for event in manual.events():
            admitted = self._acks.admit(manual, event)
            try:
                outcome = await handle(event)
            except Exception:
                await self._acks.done(admitted)
                raise
            await self._acks.done(admitted)
            yield outcome

    async def on_requested(
        self, raw: bytes | None, partition: int, key: bytes | None = None
    ) -> str:
        try:
            request = GenerationRequested.from_bytes(raw)
        except MalformedMessage as exc:
            return await self._dead_letter_unreadable(
                topic_names.GENERATION_REQUESTED, self.topics.requested, raw, key, exc
            )

        async with self._locks.hold(request.key):
            try:
                outcome = await self._fan_out(request, partition)
            except Exception as exc:
                # Nothing would ever move the order on: fail it where it
                # stands and keep the request for a replay once this is fixed.
                logger.exception(
                    "Fan-out of order_id=%s failed unexpectedly; failing the order"
                    " and dead-lettering the request",
                    request.order_id,
                )
                await self._reject(request, exc)
                outcome = "error"
        metrics.requests.labels(outcome).inc()
        return outcome

    async def on_completed(self, raw: bytes | None, key: bytes | None = None) -> str:
        try:
            completion = VariantCompleted.from_bytes(raw)
        except MalformedMessage as exc:
            return await self._dead_letter_unreadable(
                topic_names.VARIANT_COMPLETED, self.topics.completed, raw, key, exc
            )

        async with self._locks.hold(completion.key):
            try:
                outcome = await self._record_completion(completion)
            except Exception:
                logger.exception(
                    "Recording the completion of order_id=%s variant=%d failed"
                    " unexpectedly; skipping it, the sweep will time the variant out",
                    completion.order_id,
                    completion.variant_number,
                )
                outcome = "error"
        metrics.completions.labels(outcome).inc()
        return outcome

    # generation.requested

    async def _fan_out(self, request: GenerationRequested, partition: int) -> str:
        order_id = request.order_id
        if request.key in self.table:
            logger.info("Duplicate request for order_id=%s, ignoring it", order_id)
            return "duplicate"

        try:
            context = await retry_transient(
                lambda: self._requests.load(
                    order_id=order_id,
                    customization_id=request.customization_id,
                ),
                what="Loading the order",
                order_id=order_id,
                budget_s=self._db_budget_s,
            )
        except NotFound as exc:
            return await self._reject(request, exc)
        except DatabaseUnavailable:
            return await self._requeue(request)

        if context.order_status.terminal:
            logger.info(
                "Order order_id=%s is already %s; not generating it again",
                order_id,
                context.order_status,
            )
            return "finished"

        if context.customization is None:
            missing = NotFound(
                f"customization {request.customization_id} not found (the order"
                f" references {context.order_customization_id})",
                order_id=order_id,
            )
            return await self._reject(request, missing)
        try:
            brief = SongBrief.from_customization(context.customization)
        except ValueError as exc:
            return await self._reject(request, exc)

        try:
            await retry_transient(
                lambda: self._requests.start(order_id),
                what="Starting the generation",
                order_id=order_id,
                budget_s=self._db_budget_s,
            )
        except DatabaseUnavailable:
            return await self._requeue(request)

        state = OrderState.fan_out(
            partition=partition,
            user_id=context.user_id,
            brief=brief,
            now_s=time.time(),
        )
        await asyncio.gather(
            *(
                self._publish(self.topics.generate, state.work(order_id, n))
                for n in VARIANT_NUMBERS
            )
        )
        self.table[request.key] = state.to_table()
        logger.info(
            "Order order_id=%s is generating: %d variants sent to %s",
            order_id,
            len(VARIANT_NUMBERS),
            self.topics.generate,
        )
        return "fanned_out"

    async def _reject(self, request: GenerationRequested, exc: Exception) -> str:
        """Fail an order that retrying cannot help, and dead-letter its request."""
        pool = self.resources.pool
        try:
            await retry_transient(
                lambda: store.fail_order(pool, request.order_id, str(exc)),
                what="Failing the order",
                order_id=request.order_id,
                budget_s=self._db_budget_s,
            )
        except DatabaseUnavailable:
            return await self._requeue(request)

        letter = await self._dead_letter_request(request, exc)
        logger.warning(
            "Order order_id=%s failed: %s. Once the cause is fixed, replay it with"
            " `songswipe dlq replay %s`",
            request.order_id,
            exc,
            letter.message_id,
        )
        return "rejected"

    async def _dead_letter_request(
        self, request: GenerationRequested, exc: Exception
    ) -> DeadLetter:
        letter = DeadLetter(
            message_id=self._derived_id(
                topic_names.GENERATION_REQUESTED, request.order_id
            ),
            order_id=request.order_id,
            job_type=topic_names.GENERATION_REQUESTED,
            source_topic=self.topics.requested,
            payload=request.model_dump(mode="json"),
            error_type=type(exc).__name__,
            error_message=str(exc),
            error_stack="".join(traceback.format_exception(exc)),
            attempt_count=1,
        )
        await self._publish(self.topics.dlq, letter)
        metrics.dead_letters.labels(letter.job_type).inc()
        return letter

    async def _requeue(self, request: GenerationRequested) -> str:
        """Put the request behind the partition's newer ones, to try it later.

        The table does not know the order yet, so the copy is not a duplicate.
        """
        await self._publish(self.topics.requested, request)
        logger.warning(
            "Database unavailable for order_id=%s; request put back at the end of"
            " %s, will try it again",
            request.order_id,
            self.topics.requested,
        )
        return "requeued"

    # variant.completed

    async def _record_completion(self, completion: VariantCompleted) -> str:
        key = completion.key
        current = self.table.get(key)
        if current is None:
            return await self._settle_unknown(completion)

        state = OrderState.from_table(current)
        change = state.record(completion.variant_number, completion.status)
        if change is not Change.DUPLICATE:
            logger.info(
                "Variant order_id=%s variant=%d is %s",
                completion.order_id,
                completion.variant_number,
                completion.status,
            )

        # A duplicate may still settle: the settlement of the first delivery
        # may have been cut short. Settling writes the table once for both.
        resettle = change is Change.RECOVERED
        if state.all_terminal and (not state.settled or resettle):
            await self._settle(key, completion.order_id, state)
        elif change is not Change.DUPLICATE:
            self.table[key] = state.to_table()
        return change.value

    async def _settle_unknown(self, completion: VariantCompleted) -> str:
        """Settle from the database an order the table no longer holds.

        A replay can reopen an order long after the sweep forgot it; its
        completion must still move the order on, or it stays ``generating``.
        """
        order_id = completion.order_id
        tally = await retry_transient(
            lambda: store.tally(self.resources.pool, order_id),
            what="Counting the variants",
            order_id=order_id,
            budget_s=self._db_budget_s,
        )
        reopened = tally is not None and tally.order_status is OrderStatus.GENERATING
        if tally is None or not reopened or not tally.all_terminal:
            logger.warning(
                "Completion of order_id=%s variant=%d for an order this"
                " orchestrator does not know and that has nothing to settle"
                " (order %s); skipping it",
                order_id,
                completion.variant_number,
                tally.order_status if tally is not None else "missing",
            )
            return "unknown"

        await self._publish_settled(order_id, tally.complete, tally.failed)
        logger.info(
            "Order order_id=%s, no longer in the table, settled from the database:"
            " %d complete, %d failed",
            order_id,
            tally.complete,
            tally.failed,
        )
        return "settled_late"

    async def _settle(self, key: bytes, order_id: uuid.UUID, state: OrderState) -> None:
        complete_count, failed_count = state.counts()
        await self._publish_settled(order_id, complete_count, failed_count)
        state.settle(time.time())
        self.table[key] = state.to_table()

        outcome = "completed" if complete_count else "failed"
        metrics.settlements.labels(outcome).inc()
        logger.info(
            "Order order_id=%s settled as %s: %d complete, %d failed",
            order_id,
            outcome,
            complete_count,
            failed_count,
        )

    async def _publish_settled(
        self, order_id: uuid.UUID, complete_count: int, failed_count: int
    ) -> None:
        settled = GenerationSettled(
            message_id=self._derived_id(
                topic_names.GENERATION_SETTLED, order_id, complete_count
            ),
            order_id=order_id,
            complete_count=complete_count,
            failed_count=failed_count,
        )
        await self._publish(self.topics.settled, settled)

    # The sweep: stuck variants and old settled orders.

    async def _sweep_timer(self) -> None:
        if self.app.rebalancing:
            return
        await self.sweep(time.time(), self.owned_partitions())

    def owned_partitions(self) -> set[int]:
        """Partitions of the request topic this worker processes now."""
        return {
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic == self.topics.requested
        }

    async def sweep(self, now_s: float, partitions: Collection[int]) -> None:
        """Time out stuck variants and forget long-settled orders.

        Only orders of ``partitions`` are touched: after a rebalance the
        in-memory table may still hold orders another worker now owns.
        """
        timeout_s = self.settings.orchestrator_generation_timeout_s
        retention_s = self.settings.orchestrator_settled_retention_s
        for key, value in list(self.table.items()):
            # Most orders are settled: look at them without validating them.
            peek = StoredOrder.peek(value)
            if peek.partition not in partitions:
                continue
            if peek.settled_at_s is not None:
                if now_s - peek.settled_at_s >= retention_s:
                    del self.table[key]
                continue
            try:
                if not OrderState.from_table(value).overdue(now_s, timeout_s):
                    continue
                async with self._locks.hold(key):
                    await self._expire(key, now_s)
            except Exception:
                logger.exception(
                    "Sweep of order_id=%s failed; trying again at the next sweep",
                    key.decode(errors="replace"),
                )

    async def _expire(self, key: bytes, now_s: float) -> None:
        """Dispatch overdue variants again, or fail them once out of dispatches."""
        current = self.table.get(key)
        if current is None:
            return
        state = OrderState.from_table(current)
        order_id = uuid.UUID(key.decode())
        timeout_s = self.settings.orchestrator_generation_timeout_s
        max_dispatches = self.settings.orchestrator_max_dispatches

        for n in state.overdue(now_s, timeout_s):
            if state.variants[n].dispatch < max_dispatches:
                state.redispatch(n, now_s)
                await self._publish(self.topics.generate, state.work(order_id, n))
                metrics.redispatches.inc()
                logger.info(
                    "No completion for order_id=%s variant=%d within %.0f s;"
                    " dispatched it again (dispatch %d of %d)",
                    order_id,
                    n,
                    timeout_s,
                    state.variants[n].dispatch,
                    max_dispatches,
                )
            else:
                state.record(n, await self._abandon(order_id, state, n))
            self.table[key] = state.to_table()

        if state.all_terminal and not state.settled:
            await self._settle(key, order_id, state)

    async def _abandon(
        self, order_id: uuid.UUID, state: OrderState, variant: int
    ) -> VariantStatus:
        """Fail a variant that never completed; dead-letter it if it moved."""
        dispatches = state.variants[variant].dispatch
        error = (
            f"no completion after {dispatches} dispatches of"
            f" {self.settings.orchestrator_generation_timeout_s:.0f} s each"
        )
        outcome = await retry_transient(
            lambda: store.fail_variant(self.resources.pool, order_id, variant, error),
            what="Failing the variant",
            order_id=order_id,
            budget_s=self._db_budget_s,
        )
        if outcome.status is VariantStatus.COMPLETE:
            logger.info(
                "Variant order_id=%s variant=%d timed out here but is complete in"
                " the database; recording it as complete",
                order_id,
                variant,
            )
            return VariantStatus.COMPLETE
        if not outcome.moved:
            # Failed by the generator, which dead-lettered it itself.
            return VariantStatus.FAILED

        work = state.work(order_id, variant)
        letter = DeadLetter(
            message_id=self._derived_id(
                topic_names.VARIANT_GENERATE, order_id, variant, dispatches
            ),
            order_id=order_id,
            job_type=topic_names.VARIANT_GENERATE,
            source_topic=self.topics.generate,
            payload=work.model_dump(mode="json"),
            variant_number=variant,
            error_type=GENERATION_TIMEOUT,
            error_message=error,
            attempt_count=dispatches,
        )
        await self._publish(self.topics.dlq, letter)
        metrics.dead_letters.labels(letter.job_type).inc()
        logger.warning(
            "Variant order_id=%s variant=%d failed: %s. Dead letter id=%s; replay"
            " it with `songswipe dlq replay %s`",
            order_id,
            variant,
            error,
            letter.message_id,
            letter.message_id,
        )
        return VariantStatus.FAILED

    # Helpers

    async def _publish(self, topic: str, message: Message) -> None:
        """Publish and wait for the ack; without Kafka nothing can progress."""
        await retry_transient(
            lambda: publish(self.resources.producer, topic, message),
            what=f"Publishing to {topic}",
            order_id=message.order_id,
            budget_s=None,
        )

    @staticmethod
    def _derived_id(*parts: object) -> uuid.UUID:
        return uuid.uuid5(ID_NAMESPACE, ":".join(str(part) for part in parts))

    async def _dead_letter_unreadable(
        self,
        job_type: str,
        topic: str,
        raw: bytes | None,
        key: bytes | None,
        exc: MalformedMessage,
    ) -> str:
        """Keep a message no retry can read in the dead letters, and move on."""
        metrics.malformed.labels(topic).inc()
        letter = DeadLetter.unreadable(
            raw, key, job_type=job_type, source_topic=topic, exc=exc
        )
        await self._publish(self.topics.dlq, letter)
        metrics.dead_letters.labels(job_type).inc()
        logger.warning(
            "Unreadable message on %s for order_id=%s dead-lettered as id=%s: %s",
            topic,
            letter.order_id,
            letter.message_id,
            exc,
        )
        return "malformed"
