"""One order's generation state, as the orchestrator's table stores it.

The value is plain JSON so the changelog stays readable with any Kafka tool.
Only terminal outcomes are tracked here; ``generating`` lives in the
database, written by the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from songswipe.shared.messages import SongBrief, VariantGenerate
from songswipe.shared.statuses import VariantStatus

VARIANT_NUMBERS = (1, 2, 3)


class Change(StrEnum):
    """What recording a completion did to the state."""

    RECORDED = "recorded"
    #: A failed variant came back complete (a dead letter was replayed).
    RECOVERED = "recovered"
    DUPLICATE = "duplicate"


class VariantState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: VariantStatus = VariantStatus.PENDING
    dispatch: int = 1
    dispatched_at_s: float

    @property
    def terminal(self) -> bool:
        return self.status.terminal


@dataclass(frozen=True)
class StoredOrder:
    """The two fields a sweep needs, read from a stored value as it is."""

    partition: int | None
    settled_at_s: float | None

    @classmethod
    def peek(cls, value: Any) -> Self:
        if not isinstance(value, dict):
            return cls(None, None)
        return cls(value.get("partition"), value.get("settled_at_s"))


class OrderState(BaseModel):
    """What the orchestrator knows about one order's three variants."""

    model_config = ConfigDict(extra="ignore")

    #: The source partition, so a sweep only touches orders it owns.
    partition: int
    user_id: UUID
    #: Needed to dispatch again; dropped once the order settles.
    brief: SongBrief | None
    variants: dict[int, VariantState]
    settled_at_s: float | None = None

    @classmethod
    def fan_out(
        cls, *, partition: int, user_id: UUID, brief: SongBrief, now_s: float
    ) -> Self:
        variants = {n: VariantState(dispatched_at_s=now_s) for n in VARIANT_NUMBERS}
        return cls(partition=partition, user_id=user_id, brief=brief, variants=variants)

    @classmethod
    def from_table(cls, value: Any) -> Self:
        return cls.model_validate(value)

    def to_table(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def settled(self) -> bool:
        return self.settled_at_s is not None

    @property
    def all_terminal(self) -> bool:
        return all(variant.terminal for variant in self.variants.values())

    def counts(self) -> tuple[int, int]:
        """How many variants are complete and how many failed."""
        statuses = [variant.status for variant in self.variants.values()]
        return (
            statuses.count(VariantStatus.COMPLETE),
            statuses.count(VariantStatus.FAILED),
        )

    def work(self, order_id: UUID, variant_number: int) -> VariantGenerate:
        """The ``variant.generate`` message for the variant's current dispatch."""
        if self.brief is None:
            raise ValueError(f"order {order_id} is settled; nothing to dispatch")
        return VariantGenerate(
            order_id=order_id,
            user_id=self.user_id,
            variant_number=variant_number,
            attempt=1,
            dispatch=self.variants[variant_number].dispatch,
            brief=self.brief,
        )

    def record(self, variant_number: int, status: VariantStatus) -> Change:
        """Record a terminal outcome; statuses only move forward.

        The one exception is ``failed`` to ``complete``: a replayed dead
        letter that succeeded, which the order must hear about.
        """
        variant = self.variants[variant_number]
        if variant.status == status:
            return Change.DUPLICATE
        if not variant.terminal:
            variant.status = status
            return Change.RECORDED
        if variant.status == VariantStatus.FAILED and status == VariantStatus.COMPLETE:
            variant.status = status
            return Change.RECOVERED
        return Change.DUPLICATE

    def overdue(self, now_s: float, timeout_s: float) -> list[int]:
        """Variants still pending ``timeout_s`` after their last dispatch."""
        if self.settled:
            return []
        return [
            n
            for n, variant in self.variants.items()
            if not variant.terminal and now_s - variant.dispatched_at_s >= timeout_s
        ]

    def redispatch(self, variant_number: int, now_s: float) -> None:
        variant = self.variants[variant_number]
        variant.dispatch += 1
        variant.dispatched_at_s = now_s

    def settle(self, now_s: float) -> None:
        self.settled_at_s = now_s
        self.brief = None
