"""Settings shared by every service; each service subclasses ``ServiceSettings``.

Variables are UPPER_CASE in the environment (or a ``.env`` file) and every
one is documented in ``.env.example``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from songswipe.shared.topics import Topics

DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "localhost:9092"
DEFAULT_DATABASE_URL = "postgresql://songswipe:songswipe@127.0.0.1:54320/songswipe"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Environment = Environment.DEVELOPMENT
    kafka_bootstrap_servers: str = DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    kafka_topic_prefix: str = ""
    kafka_partitions: int = Field(default=6, ge=1, le=256)
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_max_size: int = Field(default=10, ge=1, le=100)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("database_url")
    @classmethod
    def _normalise_dsn(cls, value: str) -> str:
        """Accept the ``postgres://`` and SQLAlchemy-style schemes too."""
        for scheme in ("postgres://", "postgresql+psycopg://"):
            if value.startswith(scheme):
                return "postgresql://" + value.removeprefix(scheme)
        if not value.startswith("postgresql://"):
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return value

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka_topic_prefix)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    def secret_values(self) -> list[str]:
        """Every secret these settings hold, for the logs to mask."""
        fields = (getattr(self, name) for name in type(self).model_fields)
        return [
            field.get_secret_value() for field in fields if isinstance(field, SecretStr)
        ]


def refuse_placeholder(name: str, value: str, environment: Environment) -> None:
    """Refuse a development placeholder secret outside development and tests."""
    if environment is Environment.PRODUCTION and (
        not value or "dev" in value.lower() or "changeme" in value.lower()
    ):
        raise ValueError(f"{name} is a placeholder; set the real secret")
