"""Offline music: a short, real song synthesised with numpy and encoded as MP3.

Tempo, scale and groove follow the brief's mood and genre; the chord
progression, key and melody come from a random generator seeded by the order
and the variant, so a variant always sounds the same and the three variants
of an order differ. It is a stand-in for ElevenLabs that a person can play.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from functools import cache
from uuid import UUID

import lameenc
import numpy as np
import numpy.typing as npt

from songswipe.generator.provider import CompositionRequest
from songswipe.shared.messages import SongBrief

Audio = npt.NDArray[np.float64]

SAMPLE_RATE = 44_100
BIT_RATE_KBPS = 96
#: LAME's quality knob: 2 is best, 7 is fast; 5 is its usual default.
ENCODER_QUALITY = 5
FADE_OUT_S = 2.0
INSTANT_LENGTH_S = 1

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DORIAN = (0, 2, 3, 5, 7, 9, 10)

#: Scale degrees (0 = tonic) of four one-bar chords.
MAJOR_PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4))
MINOR_PROGRESSIONS = ((0, 5, 2, 6), (0, 3, 6, 2), (0, 6, 5, 6), (0, 3, 4, 0))

#: Eighth-note rhythms of one bar of melody; 0 marks a rest.
BAR_RHYTHMS = (
    (2, 2, 2, 2),
    (1, 1, 2, 2, 2),
    (2, 1, 1, 2, 2),
    (3, 1, 2, 2),
    (2, 2, 4),
    (1, 1, 1, 1, 2, 2),
    (2, 0, 1, 1, 2, 2),
)

GENRE_TEMPO_BPM = {
    "punk": 160,
    "metal": 140,
    "techno": 128,
    "edm": 126,
    "house": 124,
    "electro": 124,
    "rock": 124,
    "dance": 122,
    "k-pop": 118,
    "disco": 118,
    "indie": 116,
    "pop": 112,
    "funk": 108,
    "jazz": 104,
    "latin": 104,
    "country": 100,
    "folk": 96,
    "acoustic": 96,
    "gospel": 96,
    "hip hop": 92,
    "hip-hop": 92,
    "rap": 92,
    "soul": 90,
    "r&b": 88,
    "classical": 84,
    "orchestral": 84,
    "blues": 84,
    "lo-fi": 80,
    "lofi": 80,
    "reggae": 78,
    "ballad": 72,
    "ambient": 70,
}
DEFAULT_TEMPO_BPM = 108

BRIGHT_MOODS = (
    "joy", "happy", "upbeat", "fun", "playful", "energetic", "excit", "celebrat",
    "cheer", "uplift", "triumph", "party", "silly",
)  # fmt: skip
DARK_MOODS = (
    "sad", "melanchol", "nostalg", "bittersweet", "reflect", "somber", "moody",
    "dramatic", "epic", "myster", "dark", "angry", "emotional",
)  # fmt: skip
CALM_MOODS = ("calm", "peace", "chill", "relax", "dream", "soft", "gentle", "tender")


@dataclass(frozen=True)
class Style:
    tempo_bpm: float
    scale: tuple[int, ...]
    tonic_midi: int
    progression: tuple[int, ...]
    #: 1 = pad chords and a full kit, 2 = plucked arpeggios and a soft kit,
    #: 3 = pad chords, a busier kit and a pushing bass.
    arrangement: int

    @property
    def beat_s(self) -> float:
        return 60.0 / self.tempo_bpm


class OfflineProvider:
    """Synthesises the song on this machine, off the event loop."""

    name = "offline"

    async def compose(self, request: CompositionRequest) -> bytes:
        return await asyncio.to_thread(
            synthesise_song, request.order_id, request.variant_number, request.brief
        )

    async def aclose(self) -> None:
        return None


class InstantProvider:
    """Returns one tiny precomputed MP3 at once: measures the pipeline alone."""

    name = "instant"

    async def compose(self, request: CompositionRequest) -> bytes:
        return instant_song()

    async def aclose(self) -> None:
        return None


@cache
def instant_song() -> bytes:
    tone = np.sin(2 * np.pi * 440.0 * _seconds(INSTANT_LENGTH_S * SAMPLE_RATE))
    return encode_mp3(0.3 * tone * _fade(INSTANT_LENGTH_S * SAMPLE_RATE, 0.2))


def synthesise_song(order_id: UUID, variant_number: int, brief: SongBrief) -> bytes:
    """The MP3 of one variant: ``brief.length_s`` seconds, deterministic."""
    rng = np.random.default_rng(variant_seed(order_id, variant_number))
    style = choose_style(brief, variant_number, rng)
    return encode_mp3(render(style, brief.length_s * SAMPLE_RATE, rng))


def variant_seed(order_id: UUID, variant_number: int) -> int:
    digest = hashlib.sha256(f"{order_id}:{variant_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def choose_style(
    brief: SongBrief, variant_number: int, rng: np.random.Generator
) -> Style:
    genre = brief.genre.lower()
    mood = brief.mood.lower()
    tempo_bpm = next(
        (bpm for name, bpm in GENRE_TEMPO_BPM.items() if name in genre),
        DEFAULT_TEMPO_BPM,
    )
    if any(word in mood for word in BRIGHT_MOODS):
        tempo_bpm += 8
    elif any(word in mood for word in CALM_MOODS):
        tempo_bpm -= 14
    elif any(word in mood for word in DARK_MOODS):
        tempo_bpm -= 10

    dark = any(word in mood for word in DARK_MOODS)
    if "jazz" in genre or "blues" in genre:
        scale, progressions = DORIAN, MINOR_PROGRESSIONS
    elif dark:
        scale, progressions = MINOR, MINOR_PROGRESSIONS
    else:
        scale, progressions = MAJOR, MAJOR_PROGRESSIONS

    tempo_factor = {1: 1.0, 2: 0.9, 3: 1.08}[variant_number]
    return Style(
        tempo_bpm=float(tempo_bpm * tempo_factor + rng.uniform(-3, 3)),
        scale=scale,
        tonic_midi=int(rng.integers(57, 65)),
        progression=progressions[int(rng.integers(len(progressions)))],
        arrangement=variant_number,
    )


def render(style: Style, total_samples: int, rng: np.random.Generator) -> Audio:
    """Mix melody, chords, bass and drums into exactly ``total_samples``."""
    bar_samples = round(4 * style.beat_s * SAMPLE_RATE)
    bar_count = -(-total_samples // bar_samples) + 1
    mix = np.zeros(bar_count * bar_samples + SAMPLE_RATE, dtype=np.float64)

    tones = _Tones(style)
    verse = _melody_phrase(style, rng)
    chorus = _melody_phrase(style, rng, lift=2)
    sections = (None, verse, verse, chorus, chorus)
    for bar in range(bar_count):
        start = bar * bar_samples
        degree = style.progression[bar % len(style.progression)]
        phrase = sections[(bar // 4) % len(sections)] if bar >= 2 else None
        if phrase is not None:
            _add_melody_bar(mix, start, tones, style, phrase[bar % 4])
        _add_chords(mix, start, tones, style, degree)
        _add_bass(mix, start, tones, style, degree)
        if bar >= 1:
            _add_drums(mix, start, style, rng)

    song = mix[:total_samples]
    song *= _fade(total_samples, FADE_OUT_S)
    peak = float(np.max(np.abs(song))) or 1.0
    return np.tanh(1.2 * song / peak) * 0.85


def encode_mp3(samples: Audio) -> bytes:
    """Mono MP3 at ``SAMPLE_RATE`` of samples in -1..1."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32_000).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(BIT_RATE_KBPS)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_channels(1)
    encoder.set_quality(ENCODER_QUALITY)
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


Note = tuple[int, int, int | None]
"""Start (eighths into the bar), length (eighths) and scale step or rest."""


def _melody_phrase(
    style: Style, rng: np.random.Generator, *, lift: int = 0
) -> list[list[Note]]:
    """Four bars of melody that walk the scale and land on chord tones."""
    phrase: list[list[Note]] = []
    step = lift + int(rng.integers(0, 3)) * 2
    for bar in range(4):
        chord_steps = _chord_steps(style.progression[bar % len(style.progression)])
        rhythm = BAR_RHYTHMS[int(rng.integers(len(BAR_RHYTHMS)))]
        if bar == 3:
            rhythm = (2, 2, 4)
        notes: list[Note] = []
        position = 0
        for index, length in enumerate(rhythm):
            if length == 0:
                position += 1
                continue
            step = int(np.clip(step + rng.choice((-2, -1, -1, 1, 1, 2, 0)), -2, 9))
            if index == 0 or position % 4 == 0:
                step = min(chord_steps, key=lambda tone: abs(tone - step))
            notes.append((position, length, step))
            position += length
        phrase.append(notes)
    return phrase


def _chord_steps(degree: int) -> list[int]:
    """Scale steps of the triad on ``degree``, in two octaves."""
    triad = [degree, degree + 2, degree + 4]
    return [tone + octave for tone in triad for octave in (-7, 0, 7)]


class _Tones:
    """Rendered notes of one song; a song repeats its chords and notes a lot."""

    def __init__(self, style: Style) -> None:
        self._style = style
        self._rendered: dict[tuple[str, int, int], Audio] = {}

    def lead(self, step: int, eighths: int) -> Audio:
        key = ("lead", step, eighths)
        if key not in self._rendered:
            duration_s = eighths * self._style.beat_s / 2 * 0.95
            tone = _voice(
                _frequency(self._style, step, octave=1),
                duration_s,
                harmonics=(1.0, 0.35, 0.15),
            )
            tone *= _envelope(len(tone), attack_s=0.012, release_s=0.08, sustain=0.75)
            self._rendered[key] = 0.33 * tone
        return self._rendered[key]

    def pad(self, step: int) -> Audio:
        key = ("pad", step, 0)
        if key not in self._rendered:
            bar_s = 4 * self._style.beat_s
            tone = _voice(
                _frequency(self._style, step), bar_s, harmonics=(1.0, 0.2, 0.1)
            )
            tone *= _envelope(len(tone), attack_s=0.15, release_s=0.3, sustain=0.9)
            self._rendered[key] = 0.09 * tone
        return self._rendered[key]

    def pluck(self, step: int) -> Audio:
        key = ("pluck", step, 0)
        if key not in self._rendered:
            duration_s = self._style.beat_s * 0.8
            tone = _voice(
                _frequency(self._style, step), duration_s, harmonics=(1.0, 0.5)
            )
            tone *= _pluck(len(tone), decay_s=0.35)
            self._rendered[key] = 0.16 * tone
        return self._rendered[key]

    def bass(self, step: int) -> Audio:
        key = ("bass", step, 0)
        if key not in self._rendered:
            beat_s = self._style.beat_s
            tone = _voice(
                _frequency(self._style, step, octave=-2),
                beat_s * 0.9,
                harmonics=(1.0, 0.3),
            )
            tone *= _pluck(len(tone), decay_s=beat_s * 0.8)
            self._rendered[key] = 0.32 * tone
        return self._rendered[key]


def _add_melody_bar(
    mix: Audio, bar_start: int, tones: _Tones, style: Style, notes: list[Note]
) -> None:
    eighth = style.beat_s / 2
    for position, length, step in notes:
        if step is not None:
            start = bar_start + round(position * eighth * SAMPLE_RATE)
            _add(mix, start, tones.lead(step, length))


def _add_chords(
    mix: Audio, bar_start: int, tones: _Tones, style: Style, degree: int
) -> None:
    steps = (degree, degree + 2, degree + 4)
    if style.arrangement != 2:
        for step in steps:
            _add(mix, bar_start, tones.pad(step))
        return
    eighth = style.beat_s / 2
    for index in range(8):
        step = steps[(0, 1, 2, 1)[index % 4]] + (7 if index >= 4 else 0)
        _add(mix, bar_start + round(index * eighth * SAMPLE_RATE), tones.pluck(step))


def _add_bass(
    mix: Audio, bar_start: int, tones: _Tones, style: Style, degree: int
) -> None:
    pattern = (0, 0, 4, 0) if style.arrangement != 3 else (0, 0, 4, 7)
    for beat_index, offset in enumerate(pattern):
        start = bar_start + round(beat_index * style.beat_s * SAMPLE_RATE)
        _add(mix, start, tones.bass(degree + offset))


def _add_drums(
    mix: Audio, bar_start: int, style: Style, rng: np.random.Generator
) -> None:
    kit = _drum_kit()
    level = 0.55 if style.arrangement == 2 else 1.0
    eighth = style.beat_s / 2
    kicks = (0, 4, 5) if style.arrangement == 3 else (0, 4)
    hats = range(0, 8, 2) if style.arrangement == 2 else range(8)
    for eighth_index in range(8):
        start = bar_start + round(eighth_index * eighth * SAMPLE_RATE)
        if eighth_index in kicks:
            _add(mix, start, 0.55 * level * kit["kick"])
        if eighth_index in (2, 6):
            _add(mix, start, 0.28 * level * kit["snare"])
        if eighth_index in hats:
            accent = 1.0 if eighth_index % 2 == 0 else 0.6
            _add(mix, start, 0.07 * level * accent * kit["hat"] * rng.uniform(0.8, 1))


@cache
def _drum_kit() -> dict[str, Audio]:
    noise = np.random.default_rng(7).uniform(-1.0, 1.0, SAMPLE_RATE)
    t_kick = _seconds(round(0.3 * SAMPLE_RATE))
    sweep_hz = 45.0 + 75.0 * np.exp(-t_kick / 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(sweep_hz) / SAMPLE_RATE) * np.exp(
        -t_kick / 0.12
    )

    t_snare = _seconds(round(0.2 * SAMPLE_RATE))
    body = 0.4 * np.sin(2 * np.pi * 185.0 * t_snare)
    snare = (noise[: len(t_snare)] + body) * np.exp(-t_snare / 0.05)

    t_hat = _seconds(round(0.06 * SAMPLE_RATE))
    hiss = np.diff(noise[: len(t_hat) + 1])
    hat = hiss * np.exp(-t_hat / 0.015)
    return {"kick": kick, "snare": snare, "hat": hat}


def _frequency(style: Style, step: int, *, octave: int = 0) -> float:
    octave_shift, index = divmod(step, len(style.scale))
    midi = style.tonic_midi + style.scale[index] + 12 * (octave_shift + octave)
    return float(440.0 * 2 ** ((midi - 69) / 12))


def _voice(
    frequency: float, duration_s: float, *, harmonics: tuple[float, ...]
) -> Audio:
    t = _seconds(max(1, round(duration_s * SAMPLE_RATE)))
    phase = 2 * np.pi * frequency * t
    wave = np.zeros_like(t)
    for number, weight in enumerate(harmonics, start=1):
        wave += weight * np.sin(number * phase)
    return wave


def _envelope(
    samples: int, *, attack_s: float, release_s: float, sustain: float
) -> Audio:
    envelope = np.full(samples, sustain)
    attack = min(samples, round(attack_s * SAMPLE_RATE))
    release = min(samples - attack, round(release_s * SAMPLE_RATE))
    envelope[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)
    if release:
        envelope[samples - release :] *= np.linspace(1.0, 0.0, release)
    return envelope


def _pluck(samples: int, *, decay_s: float) -> Audio:
    envelope = np.exp(-_seconds(samples) / max(decay_s / 3, 1e-3))
    attack = min(samples, round(0.004 * SAMPLE_RATE))
    envelope[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False)
    return envelope


def _fade(samples: int, fade_s: float) -> Audio:
    """Ones with a short fade-in and a ``fade_s`` fade-out."""
    envelope = np.ones(samples)
    fade_in = min(samples, round(0.01 * SAMPLE_RATE))
    fade_out = min(samples - fade_in, round(fade_s * SAMPLE_RATE))
    envelope[:fade_in] = np.linspace(0.0, 1.0, fade_in, endpoint=False)
    if fade_out:
        envelope[samples - fade_out :] = np.linspace(1.0, 0.0, fade_out)
    return envelope


def _seconds(samples: int) -> Audio:
    return np.arange(samples, dtype=np.float64) / SAMPLE_RATE


def _add(mix: Audio, start: int, signal: Audio) -> None:
    end = min(len(mix), start + len(signal))
    if end > start:
        mix[start:end] += signal[: end - start]
