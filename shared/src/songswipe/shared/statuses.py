"""Order and variant statuses, and the rule that they only move forward."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PAID = "paid"
    GENERATING = "generating"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.COMPLETED, OrderStatus.FAILED)


class VariantStatus(StrEnum):
    PENDING = "pending"
    GENERATING = "generating"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (VariantStatus.COMPLETE, VariantStatus.FAILED)


_ORDER_RANK = {
    OrderStatus.PAID: 0,
    OrderStatus.GENERATING: 1,
    OrderStatus.COMPLETED: 2,
    OrderStatus.FAILED: 2,
}
_VARIANT_RANK = {
    VariantStatus.PENDING: 0,
    VariantStatus.GENERATING: 1,
    VariantStatus.COMPLETE: 2,
    VariantStatus.FAILED: 2,
}


def order_may_move(current: OrderStatus, new: OrderStatus) -> bool:
    """Whether an order may go from ``current`` to ``new`` (never backwards)."""
    if current.terminal:
        return False
    return _ORDER_RANK[new] > _ORDER_RANK[current]


def variant_may_move(current: VariantStatus, new: VariantStatus) -> bool:
    """Whether a variant may go from ``current`` to ``new``.

    ``generating`` to ``generating`` is allowed: a retry is a new attempt of
    the same generation.
    """
    if current.terminal:
        return False
    if current is new is VariantStatus.GENERATING:
        return True
    return _VARIANT_RANK[new] > _VARIANT_RANK[current]
