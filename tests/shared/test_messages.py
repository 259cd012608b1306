"""Every message model survives a round trip through the real broker."""

from __future__ import annotations

import json
import uuid

import pytest

from songswipe.shared.errors import MalformedMessage, PipelineError
from songswipe.shared.kafka import make_producer, publish
from songswipe.shared.messages import (
    DeadLetter,
    GenerationRequested,
    GenerationSettled,
    Message,
    SongBrief,
    VariantCompleted,
    VariantGenerate,
)
from songswipe.shared.statuses import VariantStatus
from songswipe.shared.topics import Topics
from tests.support import consume

ORDER_ID = uuid.uuid4()
USER_ID = uuid.uuid4()
BRIEF = SongBrief(
    recipient_name="Maya",
    sender_name="Sam",
    occasion="birthday",
    mood="joyful",
    genre="pop",
    length_s=30,
    memories="the road trip",
    things_to_avoid="sad endings",
)

SAMPLES: list[Message] = [
    GenerationRequested(
        order_id=ORDER_ID,
        user_id=USER_ID,
        customization_id=uuid.uuid4(),
        stripe_session_id="cs_test_1",
    ),
    VariantGenerate(order_id=ORDER_ID, user_id=USER_ID, variant_number=2, brief=BRIEF),
    VariantCompleted(
        order_id=ORDER_ID,
        variant_number=2,
        status=VariantStatus.COMPLETE,
        attempt=1,
        storage_path=f"{USER_ID}/{ORDER_ID}/variant-2.mp3",
    ),
    GenerationSettled(order_id=ORDER_ID, complete_count=2, failed_count=1),
    DeadLetter(
        order_id=ORDER_ID,
        job_type="variant.generate",
        source_topic="variant.generate",
        payload={"variant_number": 3},
        variant_number=3,
        error_type="ProviderError",
        error_message="400 bad prompt",
        attempt_count=1,
    ),
]


def topic_of(topics: Topics, message: Message) -> str:
    return {
        GenerationRequested: topics.requested,
        VariantGenerate: topics.generate,
        VariantCompleted: topics.completed,
        GenerationSettled: topics.settled,
        DeadLetter: topics.dlq,
    }[type(message)]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
async def test_round_trip_through_the_broker(
    kafka_bootstrap: str, topics: Topics, message: Message
) -> None:
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    try:
        await publish(producer, topic_of(topics, message), message)
    finally:
        await producer.stop()

    received = await consume(
        kafka_bootstrap, topic_of(topics, message), type(message), expect=1
    )

    assert received == [message]
    assert received[0].schema_version == 1


def test_malformed_message_is_rejected_with_a_clear_error() -> None:
    raw = b'{"schema_version": 1, "order_id": "not-a-uuid", "variant_number": 7}'

    with pytest.raises(MalformedMessage) as caught:
        VariantGenerate.from_bytes(raw)

    assert caught.value.retriable is False
    assert "variant.generate message rejected" in str(caught.value)
    assert "order_id" in str(caught.value)
    assert "variant_number" in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"not json", b"[]", b'{"schema_version": 2}'],
    ids=["none", "empty", "text", "array", "future-version"],
)
def test_bodies_that_are_not_messages_are_rejected(raw: bytes | None) -> None:
    with pytest.raises(MalformedMessage):
        GenerationRequested.from_bytes(raw)


def test_unknown_fields_are_refused() -> None:
    body = SAMPLES[3].model_dump(mode="json") | {"surprise": True}

    with pytest.raises(MalformedMessage, match="surprise"):
        GenerationSettled.from_bytes(json.dumps(body).encode())


def test_cross_field_rules_hold() -> None:
    with pytest.raises(MalformedMessage, match="must be 3"):
        GenerationSettled.from_bytes(
            GenerationSettled.model_construct(
                order_id=ORDER_ID, complete_count=3, failed_count=1
            )
            .model_dump_json()
            .encode()
        )
    with pytest.raises(MalformedMessage, match="storage_path"):
        VariantCompleted.from_bytes(
            b'{"order_id": "%s", "variant_number": 1, "status": "complete",'
            b' "attempt": 1}' % str(ORDER_ID).encode()
        )


def test_errors_say_whether_to_retry() -> None:
    assert MalformedMessage("x").retriable is False
    assert PipelineError("x", retriable=True).retriable is True
    assert "order_id=" in str(PipelineError("boom", order_id=ORDER_ID, variant=2))
