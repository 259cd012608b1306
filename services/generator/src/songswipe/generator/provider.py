"""What every music provider offers the worker, and how one is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from songswipe.shared.messages import SongBrief


@dataclass(frozen=True)
class CompositionRequest:
    """One variant of one order's song."""

    order_id: UUID
    variant_number: int
    brief: SongBrief

    @property
    def music_length_ms(self) -> int:
        return self.brief.length_s * 1000


class MusicProvider(Protocol):
    """Turns a request into MP3 bytes or raises ``ProviderError``."""

    #: A short label for logs and metrics.
    name: str

    async def compose(self, request: CompositionRequest) -> bytes: ...

    async def aclose(self) -> None: ...
