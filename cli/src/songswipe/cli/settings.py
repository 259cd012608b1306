"""Settings of the ``songswipe`` command line."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from songswipe.shared.settings import ServiceSettings

#: The webhook's development secret; a demo order is signed with it.
DEV_STRIPE_WEBHOOK_SECRET = "whsec_dev_placeholder"


class CliSettings(ServiceSettings):
    #: The webhook's port, as the webhook reads it; gives the default URL.
    webhook_port: int = Field(default=8000, ge=1, le=65535)
    #: Where the webhook answers, when not on this machine's WEBHOOK_PORT.
    webhook_url: str = ""
    #: Signs the demo's Stripe events; must be the webhook's secret.
    stripe_webhook_secret: str = DEV_STRIPE_WEBHOOK_SECRET
    #: The generator's local storage folder (songs land under it).
    songs_dir: Path = Path(".local/songs")
    #: Set when songs go to Supabase Storage instead of ``SONGS_DIR``.
    supabase_url: str = ""
    #: One log file per service started by ``songswipe run``.
    songswipe_log_dir: Path = Path(".local/logs")
    #: One pid file per service started by ``songswipe run``.
    songswipe_run_dir: Path = Path(".local/run")
    #: ``songswipe run`` gives the orchestrator this metrics port, the generator
    #: the next one and the finalizer the one after; 0 turns their metrics off.
    songswipe_metrics_port_base: int = Field(default=9101, ge=0, le=65533)
    #: How long a demo order may take to settle.
    demo_timeout_s: float = Field(default=300.0, gt=0)
    #: How long the services may take to become ready.
    service_start_timeout_s: float = Field(default=90.0, gt=0)
    #: How long a service may take to stop after SIGTERM before SIGKILL.
    service_stop_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("webhook_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def webhook_base_url(self) -> str:
        return self.webhook_url or f"http://127.0.0.1:{self.webhook_port}"
