"""One ``variant.generate`` message, from the variant's row to its completion.

The worker never raises for a failed generation: it turns the failure into a
retry (the next delay tier, carrying the next attempt) or, once retrying
cannot help, into a dead letter, a ``failed`` variant and a failed
completion. Bookkeeping after the outcome is known (rows, completions, retry
and dead-letter messages) is repeated in place while Kafka or Postgres are
briefly away, so an outcome is never lost; a crash before it is recorded
leaves the message uncommitted, and it is delivered again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from aiokafka import AIOKafkaProducer

from songswipe.generator import metrics
from songswipe.generator.provider import CompositionRequest, MusicProvider
from songswipe.generator.retry import RetryPolicy
from songswipe.generator.storage import SongStorage
from songswipe.generator.variants import Variant, Variants
from songswipe.shared.errors import (
    MalformedMessage,
    NotFound,
    PipelineError,
    ProviderError,
    TransientError,
)
from songswipe.shared.kafka import publish
from songswipe.shared.messages import DeadLetter, VariantCompleted, VariantGenerate
from songswipe.shared.paths import song_object_path
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import MAX_ATTEMPTS, VARIANT_GENERATE, Topics

logger = logging.getLogger(__name__)

T = TypeVar("T")

JOB_TYPE = VARIANT_GENERATE
#: Dead-letter ids are derived from the work, so a replayed failure is one row.
DEAD_LETTER_NAMESPACE = uuid.UUID("5b0e7c55-2a47-4d8e-9a37-0f3f1c2e6d11")
#: Backoff while Kafka or Postgres are away during bookkeeping.
BOOKKEEPING_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class Outcome(StrEnum):
    COMPLETE = "complete"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    ALREADY_FINISHED = "already_finished"
    SUPERSEDED = "superseded"


class VariantWorker:
    def __init__(
        self,
        *,
        provider: MusicProvider,
        storage: SongStorage,
        variants: Variants,
        producer: AIOKafkaProducer,
        topics: Topics,
        retry_policy: RetryPolicy,
    ) -> None:
        self._provider = provider
        self._storage = storage
        self._variants = variants
        self._producer = producer
        self._topics = topics
        self._retry_policy = retry_policy

    async def handle(self, job: VariantGenerate, *, source_topic: str) -> Outcome:
        try:
            outcome = await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _attach_context(exc, job)
            outcome = await self._after_failure(job, source_topic, exc)
        metrics.OUTCOMES.labels(outcome.value).inc()
        return outcome

    async def _attempt(self, job: VariantGenerate) -> Outcome:
        started = await self._variants.start_attempt(
            job.order_id, job.variant_number, job.attempt
        )
        if started is None:
            return await self._not_started(job)

        request = CompositionRequest(job.order_id, job.variant_number, job.brief)
        metrics.ATTEMPTS.labels(self._provider.name).inc()
        with metrics.GENERATION_SECONDS.labels(self._provider.name).time():
            audio = await self._provider.compose(request)

        path = song_object_path(job.user_id, job.order_id, job.variant_number)
        with metrics.UPLOAD_SECONDS.labels(self._storage.name).time():
            await self._storage.upload(path, audio)

        done = await self._durably(
            "recording the song",
            job,
            lambda: self._variants.complete(job.order_id, job.variant_number, path),
        )
        if done is None:
            return await self._not_started(job)

        await self._announce(job, done)
        logger.info(
            "Variant complete order_id=%s variant=%d attempt=%d path=%s bytes=%d",
            job.order_id,
            job.variant_number,
            job.attempt,
            path,
            len(audio),
        )
        return Outcome.COMPLETE

    async def _not_started(self, job: VariantGenerate) -> Outcome:
        """The row would not move: say again how it ended, or step aside."""
        current = await self._durably(
            "reading the variant",
            job,
            lambda: self._variants.get(job.order_id, job.variant_number),
        )
        if current is None:
            raise NotFound(
                "song_variants row missing",
                order_id=job.order_id,
                variant=job.variant_number,
                attempt=job.attempt,
            )
        if current.status.terminal:
            logger.info(
                "Variant already %s order_id=%s variant=%d, publishing its"
                " completion again and skipping the generation",
                current.status,
                job.order_id,
                job.variant_number,
            )
            await self._announce(job, current)
            return Outcome.ALREADY_FINISHED

        logger.info(
            "Dropping attempt %d of order_id=%s variant=%d: attempt %d is already"
            " under way",
            job.attempt,
            job.order_id,
            job.variant_number,
            current.attempt_count,
        )
        return Outcome.SUPERSEDED

    async def _after_failure(
        self, job: VariantGenerate, source_topic: str, exc: Exception
    ) -> Outcome:
        retriable = isinstance(exc, PipelineError) and exc.retriable
        if retriable and self._retry_policy.may_retry(job.attempt):
            return await self._retry_later(job, exc)

        if retriable:
            logger.warning(
                "Attempt %d of %d failed, retries exhausted; dead-lettering: %s",
                job.attempt,
                MAX_ATTEMPTS,
                exc,
            )
        elif isinstance(exc, PipelineError):
            logger.warning("Not retriable, dead-lettering: %s", exc)
        else:
            logger.error(
                "Unexpected failure of order_id=%s variant=%d attempt=%d;"
                " dead-lettering",
                job.order_id,
                job.variant_number,
                job.attempt,
                exc_info=exc,
            )
        await self._dead_letter(job, source_topic, exc)
        return Outcome.DEAD_LETTERED

    async def _retry_later(self, job: VariantGenerate, exc: Exception) -> Outcome:
        retry_after_ms = exc.retry_after_ms if isinstance(exc, ProviderError) else None
        delay_ms = self._retry_policy.delay_ms(
            job.attempt, retry_after_ms=retry_after_ms
        )
        due_at = datetime.now(UTC) + timedelta(milliseconds=delay_ms)
        tier_topic = self._topics.retry(job.attempt)
        retry = job.model_copy(
            update={
                "message_id": uuid.uuid4(),
                "attempt": job.attempt + 1,
                "due_at": due_at,
            }
        )
        await self._durably(
            "scheduling the retry",
            job,
            lambda: publish(self._producer, tier_topic, retry),
        )
        metrics.RETRIES.labels(_reason(exc)).inc()
        logger.info(
            "%s; retrying in %d ms as attempt %d via %s",
            exc,
            delay_ms,
            retry.attempt,
            tier_topic,
        )
        return Outcome.RETRIED

    async def _dead_letter(
        self, job: VariantGenerate, source_topic: str, exc: Exception
    ) -> None:
        error_text = f"{type(exc).__name__}: {getattr(exc, 'message', str(exc))}"
        letter = DeadLetter(
            message_id=dead_letter_id(job),
            order_id=job.order_id,
            job_type=JOB_TYPE,
            source_topic=source_topic,
            payload=job.model_dump(mode="json"),
            variant_number=job.variant_number,
            error_type=type(exc).__name__,
            error_message=str(exc),
            error_stack="".join(traceback.format_exception(exc)),
            attempt_count=job.attempt,
        )
        # The dead letter goes first: once the row says failed, a redelivery
        # only repeats the completion, so the letter must already be out.
        await self._durably(
            "dead-lettering",
            job,
            lambda: publish(self._producer, self._topics.dlq, letter),
        )
        metrics.DEAD_LETTERS.labels(type(exc).__name__).inc()

        failed = await self._durably(
            "recording the failure",
            job,
            lambda: self._variants.fail(
                job.order_id, job.variant_number, job.attempt, error_text
            ),
        )
        current = failed or await self._durably(
            "reading the variant",
            job,
            lambda: self._variants.get(job.order_id, job.variant_number),
        )
        if current is None:
            logger.warning(
                "No song_variants row for order_id=%s variant=%d; dead letter"
                " published, nothing to mark failed",
                job.order_id,
                job.variant_number,
            )
            current = Variant(VariantStatus.FAILED, job.attempt, None, error_text, None)
        await self._announce(job, current)

    async def _announce(self, job: VariantGenerate, variant: Variant) -> None:
        """Publish ``variant.completed`` for a variant that is complete or failed."""
        completion = VariantCompleted(
            order_id=job.order_id,
            variant_number=job.variant_number,
            status=(
                VariantStatus.COMPLETE
                if variant.status is VariantStatus.COMPLETE
                else VariantStatus.FAILED
            ),
            attempt=max(job.attempt, variant.attempt_count, 1),
            storage_path=variant.storage_path,
            error=variant.error,
            completed_at=variant.completed_at or datetime.now(UTC),
        )
        await self._durably(
            "publishing the completion",
            job,
            lambda: publish(self._producer, self._topics.completed, completion),
        )

    async def _durably(
        self, what: str, job: VariantGenerate, step: Callable[[], Awaitable[T]]
    ) -> T:
        context = (
            f"order_id={job.order_id} variant={job.variant_number}"
            f" attempt={job.attempt}"
        )
        return await _until_done(what, context, step)

    async def dead_letter_malformed(
        self,
        raw: bytes | None,
        key: bytes | None,
        source_topic: str,
        exc: MalformedMessage,
    ) -> None:
        """A message no attempt can read: keep its bytes for an operator."""
        letter = DeadLetter.unreadable(
            raw, key, job_type=JOB_TYPE, source_topic=source_topic, exc=exc
        )
        order_id = letter.order_id
        logger.warning(
            "Unreadable message on %s for order_id=%s, dead-lettering: %s",
            source_topic,
            order_id,
            exc,
        )
        await _until_done(
            "dead-lettering an unreadable message",
            f"order_id={order_id}",
            lambda: publish(self._producer, self._topics.dlq, letter),
        )
        metrics.DEAD_LETTERS.labels(type(exc).__name__).inc()
        metrics.OUTCOMES.labels(Outcome.DEAD_LETTERED.value).inc()


async def _until_done(what: str, context: str, step: Callable[[], Awaitable[T]]) -> T:
    """Run ``step`` until it succeeds; transient faults only delay it."""
    delays_s = itertools.chain(
        BOOKKEEPING_DELAYS_S, itertools.repeat(BOOKKEEPING_DELAYS_S[-1])
    )
    while True:
        try:
            return await step()
        except TransientError as exc:
            delay_s = next(delays_s)
            logger.warning(
                "%s failed for %s (%s); trying again in %.1f s",
                what.capitalize(),
                context,
                exc.message,
                delay_s,
            )
            await asyncio.sleep(delay_s)


def dead_letter_id(job: VariantGenerate) -> uuid.UUID:
    """The same failed attempt always gets the same dead-letter id."""
    name = (
        f"{JOB_TYPE}:{job.order_id}:{job.variant_number}:{job.dispatch}:{job.attempt}"
    )
    return uuid.uuid5(DEAD_LETTER_NAMESPACE, name)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ProviderError):
        return exc.reason
    return type(exc).__name__


def _attach_context(exc: Exception, job: VariantGenerate) -> None:
    if isinstance(exc, PipelineError):
        exc.order_id = exc.order_id or job.order_id
        exc.variant = exc.variant or job.variant_number
        exc.attempt = exc.attempt or job.attempt
