"""The ElevenLabs client: request shape and error classification, over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from songswipe.generator.elevenlabs import (
    ElevenLabsProvider,
    classify_response,
    retry_after_ms,
)
from songswipe.generator.provider import CompositionRequest
from songswipe.shared.errors import ProviderError
from songswipe.shared.messages import SongBrief
from tests.generator.fake_elevenlabs import (
    TINY_MP3,
    FakeElevenLabs,
    Reply,
    fake_elevenlabs,
)

BRIEF = SongBrief(
    recipient_name="Maya",
    sender_name="Sam",
    occasion="birthday",
    mood="joyful",
    genre="pop",
    length_s=42,
)


@pytest.fixture
def fake() -> Iterator[FakeElevenLabs]:
    with fake_elevenlabs() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeElevenLabs) -> AsyncIterator[ElevenLabsProvider]:
    client = ElevenLabsProvider(
        api_key=SecretStr("key-123"),
        base_url=fake.url,
        model_id="music_v1",
        output_format="mp3_44100_128",
        connect_timeout_s=2,
        read_timeout_s=0.5,
        max_connections=2,
    )
    yield client
    await client.aclose()


def _request() -> CompositionRequest:
    return CompositionRequest(uuid.uuid4(), 2, BRIEF)


async def test_a_generation_posts_the_brief_and_returns_the_audio(
    fake: FakeElevenLabs, provider: ElevenLabsProvider
) -> None:
    audio = await provider.compose(_request())

    assert audio == TINY_MP3
    [request] = fake.received()
    assert request.path == "/v1/music"
    assert request.headers["xi-api-key"] == "key-123"
    assert request.query == {"output_format": ["mp3_44100_128"]}
    body = request.json()
    assert body["music_length_ms"] == 42_000
    assert body["model_id"] == "music_v1"
    assert "Maya" in body["prompt"]


@pytest.mark.parametrize(
    ("reply", "retriable", "reason"),
    [
        (Reply(400), False, "bad_request"),
        (Reply(422, json_body={"detail": [{"msg": "bad"}]}), False, "bad_request"),
        (Reply(401), False, "unauthorized"),
        (Reply(403), False, "forbidden"),
        (Reply(500), True, "http_500"),
        (Reply(503), True, "http_503"),
        (
            Reply(
                429,
                json_body={"detail": {"status": "too_many_concurrent_requests"}},
            ),
            True,
            "rate_limited:too_many_concurrent_requests",
        ),
    ],
)
async def test_errors_are_classified_once_in_the_client(
    fake: FakeElevenLabs,
    provider: ElevenLabsProvider,
    reply: Reply,
    retriable: bool,
    reason: str,
) -> None:
    fake.plan("Maya", [reply])

    with pytest.raises(ProviderError) as raised:
        await provider.compose(_request())

    assert raised.value.retriable is retriable
    assert raised.value.reason == reason
    assert raised.value.status_code == reply.status


async def test_a_read_timeout_is_retriable(
    fake: FakeElevenLabs, provider: ElevenLabsProvider
) -> None:
    fake.plan("Maya", [Reply(delay_s=1.5)])

    with pytest.raises(ProviderError) as raised:
        await provider.compose(_request())

    assert raised.value.retriable
    assert raised.value.reason == "timeout"


async def test_a_refused_connection_is_retriable() -> None:
    with fake_elevenlabs() as gone:
        url = gone.url
    client = ElevenLabsProvider(
        api_key=SecretStr("key"),
        base_url=url,
        model_id="music_v1",
        output_format="mp3_44100_128",
        connect_timeout_s=1,
        read_timeout_s=1,
        max_connections=1,
    )
    try:
        with pytest.raises(ProviderError) as raised:
            await client.compose(_request())
    finally:
        await client.aclose()

    assert raised.value.retriable
    assert raised.value.reason == "connection"


def test_429_honours_retry_after_ms_before_retry_after() -> None:
    response = httpx.Response(
        429, headers={"retry-after-ms": "1500", "Retry-After": "9"}, json={}
    )

    error = classify_response(response)

    assert error.retry_after_ms == 1500
    assert error.reason == "rate_limited"


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert retry_after_ms(httpx.Headers({"Retry-After": "2"})) == 2000
    assert (
        retry_after_ms(httpx.Headers({"Retry-After": later}), now_s=now.timestamp())
        == 30_000
    )
    assert retry_after_ms(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after_ms(httpx.Headers({})) is None


def test_an_html_error_page_still_gives_a_short_message() -> None:
    response = httpx.Response(502, text="<html>" + "x" * 5000 + "</html>")

    error = classify_response(response)

    assert error.retriable
    assert len(error.message) < 400
