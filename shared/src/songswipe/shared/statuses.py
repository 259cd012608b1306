"""Order and variant statuses.

That they only move forward is enforced where every writer meets: the
database's trigger (``refuse_backward_status``) refuses a backward move.
"""

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
