"""Where a variant's audio lives, the same in Supabase Storage and on disk."""

from __future__ import annotations

from uuid import UUID

SONGS_BUCKET = "songs"


def song_object_path(user_id: UUID, order_id: UUID, variant_number: int) -> str:
    """``{user_id}/{order_id}/variant-{n}.mp3`` inside the ``songs`` bucket."""
    if not 1 <= variant_number <= 3:
        raise ValueError(f"variant_number must be 1..3, got {variant_number}")
    return f"{user_id}/{order_id}/variant-{variant_number}.mp3"
