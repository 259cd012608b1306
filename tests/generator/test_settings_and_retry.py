from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from songswipe.generator.retry import RetryPolicy
from songswipe.generator.settings import GeneratorSettings, ProviderChoice


def _settings(**values: Any) -> GeneratorSettings:
    return GeneratorSettings(_env_file=None, **values)


def test_defaults_run_offline_with_local_storage() -> None:
    settings = _settings()

    assert settings.provider is ProviderChoice.OFFLINE
    assert not settings.uses_supabase_storage
    assert settings.generator_retry_delays_ms == (15_000, 30_000, 60_000, 120_000)
    assert settings.generator_concurrency == 4
    assert settings.metrics_port == 9102


def test_retry_delays_come_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENERATOR_RETRY_DELAYS_MS", "300, 600,900,1200")
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "t1.")

    settings = _settings()

    assert settings.generator_retry_delays_ms == (300, 600, 900, 1200)
    assert settings.consumer_group_id == "t1.songswipe-generator"


def test_one_delay_per_retry_tier_is_required() -> None:
    with pytest.raises(ValidationError, match="4 delays"):
        _settings(generator_retry_delays_ms="100,200")


def test_a_key_selects_elevenlabs_and_never_shows_in_the_settings() -> None:
    settings = _settings(elevenlabs_api_key="sk_live_secret")

    assert settings.provider is ProviderChoice.ELEVENLABS
    assert "sk_live_secret" not in repr(settings)
    assert "sk_live_secret" not in str(settings.model_dump())


def test_an_empty_key_means_no_key() -> None:
    assert _settings(elevenlabs_api_key="").provider is ProviderChoice.OFFLINE


def test_production_refuses_offline_songs_and_local_storage() -> None:
    with pytest.raises(ValidationError, match="ELEVENLABS_API_KEY"):
        _settings(environment="production")


def test_retries_are_never_earlier_than_their_tier_nor_the_server_asks() -> None:
    policy = RetryPolicy((1000, 2000, 4000, 8000), 0.2, rng=random.Random(1))

    delays = [policy.delay_ms(attempt) for attempt in (1, 2, 3, 4) for _ in range(50)]

    assert all(1000 <= d <= 1200 for d in delays[:50])
    assert all(8000 <= d <= 9600 for d in delays[150:])
    assert len(set(delays[:50])) > 1, "jitter spreads retries out"
    assert policy.delay_ms(1, retry_after_ms=5000) == 5000
    assert policy.may_retry(4)
    assert not policy.may_retry(5)
