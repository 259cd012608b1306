"""Reading and trusting a delivery: size limit, signature, event envelope."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from stripe import SignatureVerificationError, WebhookSignature

from songswipe.webhook.errors import Rejected
from songswipe.webhook.events import StripeEvent

SIGNATURE_HEADER = "stripe-signature"
INVALID_SIGNATURE = "invalid signature"


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to be too large.

    A declared ``Content-Length`` is checked before reading; the count while
    reading catches chunked bodies and lying headers.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "Content-Length is not a number")
        if int(declared) > max_bytes:
            raise Rejected(413, f"body larger than {max_bytes} bytes")

    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise Rejected(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def verify_signature(
    body: bytes, header: str | None, *, secret: str, tolerance_s: int
) -> None:
    """Raise ``Rejected`` unless Stripe signed ``body`` within the tolerance."""
    if not header:
        raise Rejected(400, "missing Stripe-Signature header")
    try:
        WebhookSignature.verify_header(body, header, secret, tolerance_s)
    except UnicodeDecodeError:
        raise Rejected(400, "body is not UTF-8") from None
    except SignatureVerificationError:
        raise Rejected(400, _signature_problem(body, header, secret)) from None


def _signature_problem(body: bytes, header: str, secret: str) -> str:
    # The library checks the signature before the timestamp; a second check
    # without a tolerance tells a stale delivery from a forged one.
    try:
        WebhookSignature.verify_header(body, header, secret, None)
    except SignatureVerificationError:
        return INVALID_SIGNATURE
    return "timestamp outside the tolerance"


def parse_event(body: bytes) -> StripeEvent:
    """The verified body as a Stripe event, or ``Rejected`` with 400."""
    try:
        return StripeEvent.model_validate_json(body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise Rejected(400, "body is not valid JSON") from None
        raise Rejected(400, "body is not a Stripe event") from None
