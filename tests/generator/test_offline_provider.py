from __future__ import annotations

import uuid

import miniaudio

from songswipe.generator.provider import CompositionRequest
from songswipe.generator.synth import InstantProvider, OfflineProvider
from songswipe.shared.messages import SongBrief


def _brief(length_s: int, **overrides: str) -> SongBrief:
    values = {
        "recipient_name": "Maya",
        "sender_name": "Sam",
        "occasion": "birthday",
        "mood": "joyful",
        "genre": "pop",
        "length_s": length_s,
        **overrides,
    }
    return SongBrief.model_validate(values)


async def test_the_offline_mp3_decodes_to_the_requested_length() -> None:
    provider = OfflineProvider()
    for length_s, mood in ((10, "joyful"), (47, "melancholic")):
        request = CompositionRequest(uuid.uuid4(), 1, _brief(length_s, mood=mood))

        decoded = miniaudio.decode(await provider.compose(request))

        assert abs(decoded.duration - length_s) < 1.0
        assert max(decoded.samples) > 1000, "the song is not silence"


async def test_a_variant_always_sounds_the_same_and_variants_differ() -> None:
    provider = OfflineProvider()
    order_id = uuid.uuid4()
    brief = _brief(12, genre="jazz")

    first = await provider.compose(CompositionRequest(order_id, 1, brief))
    again = await provider.compose(CompositionRequest(order_id, 1, brief))
    other = await provider.compose(CompositionRequest(order_id, 2, brief))

    assert first == again
    assert first != other


async def test_the_instant_provider_returns_a_playable_mp3() -> None:
    audio = await InstantProvider().compose(
        CompositionRequest(uuid.uuid4(), 3, _brief(60))
    )

    assert miniaudio.decode(audio).duration > 0.5
