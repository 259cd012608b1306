"""The webhook's own branches of the pipeline's error tree."""

from __future__ import annotations

from songswipe.shared.errors import PermanentError


class Rejected(PermanentError):
    """A request refused before it is trusted: bad signature, body or size."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


class Unprocessable(PermanentError):
    """A verified event that can never succeed; the message says what to fix."""
