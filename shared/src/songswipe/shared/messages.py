"""Message bodies for every topic: JSON, versioned, validated on both ends.

Every message is keyed by its ``order_id`` so that everything about one order
stays in one partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from songswipe.shared import topics
from songswipe.shared.errors import MalformedMessage
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.validation import describe_invalid

SCHEMA_VERSION = 1

#: The order a dead letter is filed under when its message had no readable key.
UNREADABLE_ORDER_ID = UUID(int=0)

MIN_SONG_LENGTH_S = 10
MAX_SONG_LENGTH_S = 300


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Common envelope: schema version, a unique id, the order it is about."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The base name of the topic this message travels on.
    topic: ClassVar[str]

    schema_version: Literal[1] = 1
    message_id: UUID = Field(default_factory=uuid4)
    order_id: UUID

    @property
    def key(self) -> bytes:
        return str(self.order_id).encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Self:
        """Validate a message read from Kafka, or raise ``MalformedMessage``."""
        if raw is None:
            raise MalformedMessage(f"{cls.topic} message has no body")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            problems = describe_invalid(exc)
            raise MalformedMessage(f"{cls.topic} message rejected: {problems}") from exc


class SongBrief(BaseModel):
    """What the customer asked for, as the generator needs it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipient_name: str = Field(min_length=1, max_length=100)
    sender_name: str = Field(min_length=1, max_length=100)
    occasion: str = Field(min_length=1, max_length=100)
    mood: str = Field(min_length=1, max_length=50)
    genre: str = Field(min_length=1, max_length=50)
    length_s: int = Field(ge=MIN_SONG_LENGTH_S, le=MAX_SONG_LENGTH_S)
    memories: str = Field(default="", max_length=2000)
    things_to_avoid: str = Field(default="", max_length=1000)

    @classmethod
    def from_customization(cls, row: dict[str, Any]) -> Self:
        """Map a ``customizations`` row (snake_case columns) to a brief."""
        return cls(
            recipient_name=row["recipient_name"],
            sender_name=row["sender_name"],
            occasion=row["occasion"],
            mood=row["mood"],
            genre=row["genre"],
            length_s=row["song_length_seconds"],
            memories=row["memories"] or "",
            things_to_avoid=row["things_to_avoid"] or "",
        )


class GenerationRequested(Message):
    topic = topics.GENERATION_REQUESTED

    user_id: UUID
    customization_id: UUID
    stripe_session_id: str = Field(min_length=1, max_length=255)
    requested_at: datetime = Field(default_factory=utc_now)


class VariantGenerate(Message):
    topic = topics.VARIANT_GENERATE

    user_id: UUID
    variant_number: int = Field(ge=1, le=3)
    attempt: int = Field(default=1, ge=1, le=topics.MAX_ATTEMPTS)
    #: How many times the orchestrator has handed this variant out.
    dispatch: int = Field(default=1, ge=1)
    #: Not to be generated before this time (set by the retry tiers).
    due_at: datetime | None = None
    brief: SongBrief


class VariantCompleted(Message):
    topic = topics.VARIANT_COMPLETED

    variant_number: int = Field(ge=1, le=3)
    status: Literal[VariantStatus.COMPLETE, VariantStatus.FAILED]
    attempt: int = Field(ge=1)
    storage_path: str | None = None
    error: str | None = None
    completed_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _path_when_complete(self) -> Self:
        if self.status is VariantStatus.COMPLETE and not self.storage_path:
            raise ValueError("a complete variant needs its storage_path")
        return self


class GenerationSettled(Message):
    topic = topics.GENERATION_SETTLED

    complete_count: int = Field(ge=0, le=3)
    failed_count: int = Field(ge=0, le=3)
    settled_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _three_variants(self) -> Self:
        if self.complete_count + self.failed_count != 3:
            raise ValueError("complete_count + failed_count must be 3")
        return self


class DeadLetter(Message):
    """Work that will not succeed by retrying; enough to replay it later.

    ``message_id`` is the dead letter's id: the monitor stores each once.
    """

    topic = topics.GENERATION_DLQ

    job_type: str = Field(min_length=1)
    source_topic: str = Field(min_length=1)
    payload: dict[str, Any]
    variant_number: int | None = Field(default=None, ge=1, le=3)
    error_type: str
    error_message: str
    error_stack: str = ""
    attempt_count: int = Field(ge=0)
    failed_at: datetime = Field(default_factory=utc_now)

    @classmethod
    def unreadable(
        cls,
        raw: bytes | None,
        key: bytes | None,
        *,
        job_type: str,
        source_topic: str,
        exc: MalformedMessage,
        message_id: UUID | None = None,
    ) -> DeadLetter:
        """A message nothing can read, kept whole for an operator to mend.

        The order id comes from the message's key; without a readable key the
        dead letter is filed under ``UNREADABLE_ORDER_ID``.
        """
        try:
            order_id = UUID((key or b"").decode())
        except ValueError:
            order_id = UNREADABLE_ORDER_ID
        return cls(
            message_id=message_id or uuid4(),
            order_id=order_id,
            job_type=job_type,
            source_topic=source_topic,
            # Postgres's jsonb takes no NUL character, and failed_jobs is
            # where this ends up.
            payload={
                "raw": (raw or b"")
                .decode("utf-8", errors="replace")
                .replace("\x00", "\ufffd")
            },
            error_type=type(exc).__name__,
            error_message=str(exc),
            attempt_count=0,
        )
