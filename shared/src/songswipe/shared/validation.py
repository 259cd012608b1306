"""Validation errors told without the values that failed.

pydantic's own text quotes each input, and an input may be a secret (a
settings value) or a customer's words (a message body): neither belongs in a
log line or on a terminal. What is said instead is where and what.
"""

from __future__ import annotations

from pydantic import ValidationError


def describe_invalid(exc: ValidationError, *, whole: str = "body") -> str:
    """``location: problem`` for each error, ``whole`` where there is no field."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or whole}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )
