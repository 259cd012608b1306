"""Secrets and customers' words stay out of log lines and error texts."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from songswipe.shared.errors import MalformedMessage
from songswipe.shared.logs import MASK, MaskingFormatter
from songswipe.shared.messages import (
    UNREADABLE_ORDER_ID,
    DeadLetter,
    GenerationRequested,
)
from songswipe.shared.settings import ServiceSettings
from songswipe.shared.validation import describe_invalid

SECRET = "sk_live_4f9c2e7d1b8a6350"


class _Secretive(ServiceSettings):
    api_key: SecretStr = SecretStr(SECRET)
    short_key: SecretStr = SecretStr("abc")


def _line(formatter: logging.Formatter, message: str, *args: object) -> str:
    record = logging.makeLogRecord(
        {"msg": message, "args": args, "levelname": "WARNING", "name": "t"}
    )
    return formatter.format(record)


def test_settings_list_their_secret_values() -> None:
    assert _Secretive().secret_values() == [SECRET, "abc"]


def test_the_formatter_masks_secrets_and_url_passwords() -> None:
    formatter = MaskingFormatter(logging.Formatter("%(message)s"), [SECRET, "abc"])

    line = _line(
        formatter,
        "key=%s url=%s word=%s",
        SECRET,
        "postgresql://songswipe:Pa55-w0rd%zz@db.example:5432/app",
        "abc",
    )

    assert SECRET not in line
    assert "Pa55-w0rd" not in line
    assert (
        line
        == f"key={MASK} url=postgresql://songswipe:{MASK}@db.example:5432/app word=abc"
    )


def test_the_formatter_masks_secrets_in_tracebacks() -> None:
    formatter = MaskingFormatter(logging.Formatter("%(message)s"), [SECRET])
    try:
        raise RuntimeError(f"refused {SECRET}")
    except RuntimeError:
        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})

    line = formatter.format(record)

    assert "RuntimeError: refused ***" in line
    assert SECRET not in line


def test_a_malformed_message_is_described_without_its_contents() -> None:
    body = b'{"schema_version": 1, "order_id": "Maya remembers the lake"}'

    with pytest.raises(MalformedMessage) as caught:
        GenerationRequested.from_bytes(body)

    assert "order_id" in str(caught.value)
    assert "lake" not in str(caught.value)


def test_describe_invalid_names_the_place_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://app:{SECRET}@db/app")

    with pytest.raises(ValidationError) as caught:
        ServiceSettings()

    described = describe_invalid(caught.value, whole="settings")
    assert described.startswith("database_url: Value error")
    assert SECRET not in described


def test_a_service_refusing_its_settings_does_not_log_them(
    tmp_path: Path,
) -> None:
    environment = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"mysql://app:{SECRET}@db/app",
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }
    result = subprocess.run(
        [sys.executable, "-m", "songswipe.webhook"],
        env=environment,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "database_url" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_an_unreadable_message_keeps_its_bytes_as_jsonb_safe_text() -> None:
    exc = MalformedMessage("generation.settled message rejected")

    letter = DeadLetter.unreadable(
        b"\x00{broken \xff",
        b"not-a-uuid",
        job_type="generation.settled",
        source_topic="generation.settled",
        exc=exc,
    )

    assert letter.order_id == UNREADABLE_ORDER_ID
    assert letter.payload == {"raw": "\ufffd{broken \ufffd"}
    assert DeadLetter.from_bytes(letter.to_bytes()) == letter
