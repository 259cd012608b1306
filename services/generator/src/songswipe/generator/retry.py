"""When a failed attempt runs again."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from songswipe.shared.topics import MAX_ATTEMPTS


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt ``n`` that fails waits in tier ``n`` for ``delays_ms[n - 1]``.

    Jitter only ever adds (up to ``jitter`` times the tier's delay), so no
    retry comes earlier than its tier, and many variants failing together
    do not all come back in the same millisecond.
    """

    delays_ms: Sequence[int]
    jitter: float
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def may_retry(self, attempt: int) -> bool:
        return attempt < MAX_ATTEMPTS

    def delay_ms(self, attempt: int, *, retry_after_ms: int | None = None) -> int:
        """How long attempt ``attempt + 1`` waits; at least ``retry_after_ms``."""
        tier_delay_ms = self.delays_ms[attempt - 1]
        jittered_ms = tier_delay_ms + round(
            tier_delay_ms * self.jitter * self.rng.random()
        )
        return max(jittered_ms, retry_after_ms or 0)
