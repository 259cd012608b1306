"""The pipeline's one error tree.

Retry and dead-letter routing ask an error whether it is ``retriable``
instead of matching messages. Foreign errors (httpx, psycopg, aiokafka) are
wrapped at the boundary with ``raise ... from exc`` and carry the order,
variant and attempt they happened to.
"""

from __future__ import annotations

from uuid import UUID


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    retriable: bool = False

    def __init__(
        self,
        message: str,
        *,
        order_id: UUID | None = None,
        variant: int | None = None,
        attempt: int | None = None,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.order_id = order_id
        self.variant = variant
        self.attempt = attempt
        if retriable is not None:
            self.retriable = retriable

    def context(self) -> str:
        """The identifiers as ``key=value`` pairs, for log lines."""
        pairs = [
            ("order_id", self.order_id),
            ("variant", self.variant),
            ("attempt", self.attempt),
        ]
        return " ".join(f"{key}={value}" for key, value in pairs if value is not None)

    def __str__(self) -> str:
        context = self.context()
        return f"{self.message} ({context})" if context else self.message


class TransientError(PipelineError):
    """A fault that may clear by itself: retrying is worth it."""

    retriable = True


class PermanentError(PipelineError):
    """A fault that retrying cannot fix: the work goes to a dead letter."""

    retriable = False


class ConfigurationError(PermanentError):
    """Settings are missing or refused; an operator has to fix them."""


class MalformedMessage(PermanentError):
    """A Kafka message that does not match its topic's schema."""


class DatabaseUnavailable(TransientError):
    """Postgres could not be reached or the statement failed transiently."""


class KafkaUnavailable(TransientError):
    """The broker did not acknowledge a message in time."""


class NotFound(PermanentError):
    """A row the work depends on does not exist, and will not appear."""


class ProviderError(PipelineError):
    """The music provider refused or failed a generation.

    ``status_code`` is the HTTP status when there was a response. Whether it
    is retriable is decided once, where the response is classified.
    """

    def __init__(
        self,
        message: str,
        *,
        retriable: bool,
        status_code: int | None = None,
        reason: str = "error",
        retry_after_ms: int | None = None,
        order_id: UUID | None = None,
        variant: int | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(
            message,
            order_id=order_id,
            variant=variant,
            attempt=attempt,
            retriable=retriable,
        )
        self.status_code = status_code
        self.reason = reason
        self.retry_after_ms = retry_after_ms


class StorageError(TransientError):
    """Uploading the audio failed; the upload overwrites, so retrying is safe."""


class Retry(Exception):
    """Ask for the same work again after ``delay_ms``.

    A retry is control flow: it is logged as a scheduled retry at INFO, never
    as a failure.
    """

    def __init__(self, delay_ms: int, *, reason: str) -> None:
        super().__init__(f"retry in {delay_ms} ms: {reason}")
        self.delay_ms = delay_ms
        self.reason = reason
