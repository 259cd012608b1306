"""Stripe's webhook signature scheme, for the demo and the tests.

The webhook verifies with the ``stripe`` library; this is the sending side,
which the library does not offer: ``t=<unix time>,v1=<HMAC-SHA256 of
"<t>.<body>" keyed by the endpoint secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def signature_header(
    payload: bytes, secret: str, *, timestamp: int | None = None
) -> str:
    """The ``Stripe-Signature`` header Stripe would send with ``payload``."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    signed = f"{signed_at}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={signed_at},v1={digest}"
