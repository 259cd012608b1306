"""The generator's settings: the shared ones plus provider, storage and retries."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from songswipe.shared.settings import ServiceSettings, refuse_placeholder
from songswipe.shared.topics import RETRY_TIER_COUNT

DEFAULT_ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_RETRY_DELAYS_MS = (15_000, 30_000, 60_000, 120_000)
DEFAULT_METRICS_PORT = 9102


class ProviderChoice(StrEnum):
    """Which music provider generates the audio.

    ``auto`` is ElevenLabs when a key is set and the offline synthesiser
    otherwise; ``instant`` returns one tiny precomputed MP3 (benchmarks).
    """

    AUTO = "auto"
    ELEVENLABS = "elevenlabs"
    OFFLINE = "offline"
    INSTANT = "instant"


class GeneratorSettings(ServiceSettings):
    elevenlabs_api_key: SecretStr | None = None
    elevenlabs_base_url: str = DEFAULT_ELEVENLABS_BASE_URL
    elevenlabs_model_id: str = Field(default="music_v1", min_length=1)
    elevenlabs_output_format: str = Field(default="mp3_44100_128", pattern=r"^mp3_")
    elevenlabs_connect_timeout_s: float = Field(default=10.0, gt=0)
    #: Generation takes tens of seconds, longer songs take longer.
    elevenlabs_read_timeout_s: float = Field(default=240.0, gt=0)
    generator_provider: ProviderChoice = ProviderChoice.AUTO

    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    storage_timeout_s: float = Field(default=60.0, gt=0)
    songs_dir: Path = Path(".local/songs")

    generator_concurrency: int = Field(default=4, ge=1, le=1000)
    generator_retry_delays_ms: Annotated[tuple[int, ...], NoDecode] = (
        DEFAULT_RETRY_DELAYS_MS
    )
    generator_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    #: How long the producer waits to batch completions and retries; see
    #: ``orchestrator_kafka_linger_ms`` for why 20 ms.
    generator_kafka_linger_ms: int = Field(default=20, ge=0, le=100)
    generator_shutdown_grace_s: float = Field(default=30.0, ge=0)
    metrics_port: int = Field(default=DEFAULT_METRICS_PORT, ge=0, le=65535)

    @field_validator(
        "elevenlabs_api_key", "supabase_url", "supabase_service_role_key", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """``KEY=`` in a ``.env`` file means "not set", not an empty secret."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("elevenlabs_base_url", "supabase_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("generator_retry_delays_ms", mode="before")
    @classmethod
    def _parse_delays(cls, value: Any) -> Any:
        """Accept ``15000,30000,60000,120000`` as the environment spells it."""
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("generator_retry_delays_ms")
    @classmethod
    def _one_delay_per_tier(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) != RETRY_TIER_COUNT:
            raise ValueError(
                f"GENERATOR_RETRY_DELAYS_MS needs {RETRY_TIER_COUNT} delays,"
                f" one per retry tier, got {len(value)}"
            )
        if any(delay_ms < 0 for delay_ms in value):
            raise ValueError("GENERATOR_RETRY_DELAYS_MS cannot be negative")
        return value

    @model_validator(mode="after")
    def _provider_and_storage_are_usable(self) -> Self:
        if (
            self.generator_provider is ProviderChoice.ELEVENLABS
            and self.elevenlabs_api_key is None
        ):
            raise ValueError("GENERATOR_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY")
        if (self.supabase_url is None) != (self.supabase_service_role_key is None):
            raise ValueError(
                "set both SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or neither"
            )
        if self.is_production:
            self._refuse_development_setup()
        return self

    def _refuse_development_setup(self) -> None:
        """Production generates with ElevenLabs and stores in Supabase."""
        if self.provider is not ProviderChoice.ELEVENLABS:
            raise ValueError("production needs ELEVENLABS_API_KEY (no offline songs)")
        if self.supabase_service_role_key is None:
            raise ValueError("production needs SUPABASE_URL and its service role key")
        assert self.elevenlabs_api_key is not None
        refuse_placeholder(
            "ELEVENLABS_API_KEY",
            self.elevenlabs_api_key.get_secret_value(),
            self.environment,
        )
        refuse_placeholder(
            "SUPABASE_SERVICE_ROLE_KEY",
            self.supabase_service_role_key.get_secret_value(),
            self.environment,
        )

    @property
    def provider(self) -> ProviderChoice:
        """The provider ``auto`` resolves to."""
        if self.generator_provider is not ProviderChoice.AUTO:
            return self.generator_provider
        if self.elevenlabs_api_key is not None:
            return ProviderChoice.ELEVENLABS
        return ProviderChoice.OFFLINE

    @property
    def uses_supabase_storage(self) -> bool:
        return self.supabase_url is not None

    @property
    def consumer_group_id(self) -> str:
        return f"{self.kafka_topic_prefix}songswipe-generator"
