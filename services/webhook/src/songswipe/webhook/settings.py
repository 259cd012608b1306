"""The webhook's settings: the shared ones plus Stripe, HTTP and sweep variables."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from songswipe.shared.settings import ServiceSettings, refuse_placeholder

#: Works with the demo and the tests; production refuses it.
DEV_WEBHOOK_SECRET = "whsec_dev_placeholder"
MIB = 1024 * 1024
#: How long past WEBHOOK_PUBLISH_TIMEOUT_S a delivery may still be publishing
#: the order it created (a slow event loop, a pause for garbage collection).
PUBLISH_GRACE_S = 1.0


class WebhookSettings(ServiceSettings):
    stripe_webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    stripe_api_key: SecretStr | None = None

    #: This machine only, unless asked: the development placeholder secret
    #: must not meet the open internet by default.
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8000, ge=1, le=65535)
    webhook_max_body_bytes: int = Field(default=MIB, ge=1024)
    webhook_signature_tolerance_s: int = Field(default=300, ge=1)
    webhook_publish_timeout_s: float = Field(default=5.0, gt=0)
    webhook_database_timeout_s: float = Field(default=5.0, gt=0)
    webhook_kafka_linger_ms: int = Field(default=0, ge=0, le=100)

    webhook_sweep_interval_s: float = Field(default=60.0, ge=0)
    webhook_sweep_after_s: float = Field(default=120.0, ge=0)
    webhook_sweep_republish_after_s: float = Field(default=1800.0, ge=0)
    webhook_sweep_batch_size: int = Field(default=100, ge=1, le=10_000)

    @property
    def uses_placeholder_secret(self) -> bool:
        return self.stripe_webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Self:
        refuse_placeholder(
            "STRIPE_WEBHOOK_SECRET",
            self.stripe_webhook_secret.get_secret_value(),
            self.environment,
        )
        if self.stripe_api_key is not None:
            refuse_placeholder(
                "STRIPE_API_KEY",
                self.stripe_api_key.get_secret_value(),
                self.environment,
            )
        return self

    @model_validator(mode="after")
    def _sweep_after_deliveries(self) -> Self:
        # The creating delivery publishes without a lock; the sweep must not
        # race it.
        in_flight_s = self.webhook_publish_timeout_s + PUBLISH_GRACE_S
        if (
            self.webhook_sweep_interval_s > 0
            and self.webhook_sweep_after_s < in_flight_s
        ):
            raise ValueError(
                f"WEBHOOK_SWEEP_AFTER_S must be at least {in_flight_s:g} s"
                " (WEBHOOK_PUBLISH_TIMEOUT_S plus a grace): a younger order may"
                " still be being published by its delivery"
            )
        return self
