"""``.env.example`` documents every variable any process reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from songswipe.cli.settings import CliSettings
from songswipe.finalizer.settings import FinalizerSettings
from songswipe.generator.settings import GeneratorSettings
from songswipe.orchestrator.settings import OrchestratorSettings
from songswipe.webhook.settings import WebhookSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
#: ``NAME=value``, or ``# NAME=`` for a variable shown but left unset.
DOCUMENTED = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
#: Any variable named in the file, set or explained in a comment.
MENTIONED = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b")
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    WebhookSettings,
    OrchestratorSettings,
    GeneratorSettings,
    FinalizerSettings,
    CliSettings,
)
#: Read straight from the environment, outside any settings class.
READ_DIRECTLY = {"SONGSWIPE_MIGRATIONS_DIR"}


@pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
def test_every_setting_is_in_env_example(settings_class: type[BaseSettings]) -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    documented = set(DOCUMENTED.findall(text)) | set(MENTIONED.findall(text))

    read = {name.upper() for name in settings_class.model_fields}

    assert read - documented == set()


def test_every_documented_variable_is_read() -> None:
    documented = set(DOCUMENTED.findall(ENV_EXAMPLE.read_text(encoding="utf-8")))
    read = set(READ_DIRECTLY)
    for settings_class in SETTINGS_CLASSES:
        read |= {name.upper() for name in settings_class.model_fields}

    assert documented - read == set()
