"""Process-wide logging, configured once at start-up, never at import."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

#: The password of a ``scheme://user:password@host`` URL, wherever a library
#: quotes one (libpq does, in some connection errors).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)

#: Shorter values would mask ordinary words; real secrets are longer.
MIN_SECRET_LENGTH = 8
MASK = "***"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class MaskingFormatter(logging.Formatter):
    """Formats with ``inner``, then masks secrets and URL passwords in the line,
    tracebacks included, whichever library wrote it."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = sorted(
            {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )

    def format(self, record: logging.LogRecord) -> str:
        line = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", self._inner.format(record))
        for secret in self._secrets:
            line = line.replace(secret, MASK)
        return line


def configure_logging(
    level: str = "INFO",
    fmt: Literal["plain", "json"] = "plain",
    *,
    secrets: Iterable[str] = (),
) -> None:
    """Send every logger's records to stderr, as text or JSON lines, with
    ``secrets`` and URL passwords masked."""
    inner = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(inner, secrets))

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

    # The Kafka client logs every reconnect attempt at INFO.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
