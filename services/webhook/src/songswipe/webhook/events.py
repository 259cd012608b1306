"""What the webhook reads from a verified Stripe event, and what it decides.

Only the few fields the pipeline needs are modelled; everything else in the
event is ignored, so new fields Stripe adds change nothing.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from songswipe.shared.validation import describe_invalid
from songswipe.webhook.errors import Unprocessable

CHECKOUT_COMPLETED = "checkout.session.completed"
ASYNC_PAYMENT_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_PAYMENT_FAILED = "checkout.session.async_payment_failed"
PAYMENT_INTENT_FAILED = "payment_intent.payment_failed"

#: The metadata keys the product's checkout sets on every session.
USER_ID_KEY = "userId"
CUSTOMIZATION_ID_KEY = "customizationId"

#: The job type of a dead-lettered Stripe event in ``failed_jobs``.
DEAD_LETTER_JOB_TYPE = "stripe.checkout"
_DEAD_LETTER_NAMESPACE = UUID("5b0f3c52-8f0a-4a7e-9d61-3c1f2e7a9b40")

_STRIPE_ID = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_BIGINT_MAX = 2**63 - 1

#: A session paid for in full; "no_payment_required" (a 100 % discount) never
#: gets an async payment event, so it would otherwise wait forever.
PAID_STATUSES = ("paid", "no_payment_required")


class Outcome(StrEnum):
    """What became of one delivery; also the ``stripe_events.outcome`` value."""

    ORDER_RECORDED = "order_recorded"
    REPUBLISHED = "republished"
    DUPLICATE = "duplicate"
    AWAITING_PAYMENT = "awaiting_payment"
    PAYMENT_FAILED = "payment_failed"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


class Kind(StrEnum):
    PAID = "paid"
    UNPAID = "unpaid"
    PAYMENT_FAILED = "payment_failed"
    OTHER = "other"


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    object: dict[str, Any]


class StripeEvent(BaseModel):
    """The envelope of every Stripe event."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=255, pattern=_STRIPE_ID.pattern)
    object: str = Field(pattern=r"^event$")
    type: str = Field(min_length=1, max_length=255)
    data: EventData

    @property
    def kind(self) -> Kind:
        if self.type == ASYNC_PAYMENT_SUCCEEDED:
            return Kind.PAID
        if self.type == CHECKOUT_COMPLETED:
            status = self.data.object.get("payment_status")
            return Kind.PAID if status in PAID_STATUSES else Kind.UNPAID
        if self.type in (ASYNC_PAYMENT_FAILED, PAYMENT_INTENT_FAILED):
            return Kind.PAYMENT_FAILED
        return Kind.OTHER

    @property
    def session_id(self) -> str | None:
        """The Checkout session the event is about, if it is about one."""
        if not self.type.startswith("checkout.session."):
            return None
        session_id = self.data.object.get("id")
        if not isinstance(session_id, str) or not _STRIPE_ID.fullmatch(session_id):
            return None
        return session_id


class CheckoutSession(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=255, pattern=_STRIPE_ID.pattern)
    payment_intent: str | None = Field(
        default=None, max_length=255, pattern=_STRIPE_ID.pattern
    )
    amount_total: int | None = Field(default=None, ge=0, le=_BIGINT_MAX)
    currency: str | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("payment_intent", mode="before")
    @classmethod
    def _intent_id(cls, value: Any) -> Any:
        """An expanded payment intent is an object; keep its id."""
        if isinstance(value, dict):
            return value.get("id")
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str | None) -> str | None:
        if value is None:
            return None
        lowered = value.lower()
        if len(lowered) != 3 or not lowered.isascii() or not lowered.isalpha():
            raise ValueError(f"{value!r} is not a three-letter ISO currency code")
        return lowered


class PaidCheckout(BaseModel):
    """A paid Checkout session with everything an order needs."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    payment_intent_id: str | None
    amount_total: int | None
    currency: str | None
    user_id: UUID
    customization_id: UUID


def paid_checkout(event: StripeEvent) -> PaidCheckout:
    """Read the order out of a paid session, or raise ``Unprocessable``."""
    try:
        session = CheckoutSession.model_validate(event.data.object)
    except ValidationError as exc:
        problems = describe_invalid(exc, whole="session")
        raise Unprocessable(
            f"the Checkout session in the event is not usable ({problems})"
        ) from exc

    metadata = session.metadata or {}
    user_id = _metadata_uuid(metadata, USER_ID_KEY, session.id)
    customization_id = _metadata_uuid(metadata, CUSTOMIZATION_ID_KEY, session.id)
    return PaidCheckout(
        session_id=session.id,
        payment_intent_id=session.payment_intent,
        amount_total=session.amount_total,
        currency=session.currency,
        user_id=user_id,
        customization_id=customization_id,
    )


def _metadata_uuid(metadata: dict[str, Any], key: str, session_id: str) -> UUID:
    value = metadata.get(key)
    if value is None or value == "":
        raise Unprocessable(
            f"Checkout session {session_id} has no metadata.{key}; the checkout"
            f" must set metadata {USER_ID_KEY} and {CUSTOMIZATION_ID_KEY}"
        )
    try:
        return UUID(str(value))
    except ValueError:
        raise Unprocessable(
            f"metadata.{key} of Checkout session {session_id} is not a UUID;"
            " the checkout must put the id there, not a name or a number"
        ) from None


def dead_letter_id(event_id: str) -> UUID:
    """The same id for every delivery of one event, so it is stored once."""
    return uuid5(_DEAD_LETTER_NAMESPACE, event_id)


def storable_event(body: bytes) -> dict[str, Any]:
    """The event as ``jsonb`` accepts it (no NUL characters, no NaN)."""
    try:
        event = json.loads(body.decode().replace("\\u0000", "\\ufffd"))
        json.dumps(event, allow_nan=False)
    except ValueError:
        return {"unstorable": "the event body could not be stored as JSON"}
    if not isinstance(event, dict):
        return {"unstorable": "the event body is not a JSON object"}
    return event
