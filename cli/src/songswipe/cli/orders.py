"""Reading orders and their variants, and showing them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from songswipe.cli.settings import CliSettings
from songswipe.shared.db import Connection
from songswipe.shared.statuses import OrderStatus, VariantStatus

VARIANT_COUNT = 3


@dataclass(frozen=True)
class VariantView:
    number: int
    status: str
    attempt_count: int
    storage_path: str | None
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def terminal(self) -> bool:
        return VariantStatus(self.status).terminal


@dataclass(frozen=True)
class DeadLetterView:
    id: uuid.UUID
    order_id: uuid.UUID | None
    job_type: str
    variant_number: int | None
    source_topic: str | None
    error_message: str
    retry_count: int
    failed_at: datetime
    replayed_at: datetime | None
    replay_count: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeadLetterView:
        return cls(
            id=row["id"],
            order_id=row["order_id"],
            job_type=row["job_type"],
            variant_number=variant_number_of(row["event_data"]),
            source_topic=row["source_topic"],
            error_message=row["error_message"],
            retry_count=row["retry_count"],
            failed_at=row["failed_at"],
            replayed_at=row["replayed_at"],
            replay_count=row["replay_count"],
        )


@dataclass(frozen=True)
class OrderView:
    id: uuid.UUID
    user_id: uuid.UUID
    status: str
    stripe_session_id: str
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    variants: tuple[VariantView, ...]
    dead_letters: tuple[DeadLetterView, ...] = field(default=())

    @property
    def settled(self) -> bool:
        """The order is final and so is every one of its variants."""
        return (
            OrderStatus(self.status).terminal
            and len(self.variants) == VARIANT_COUNT
            and all(v.terminal for v in self.variants)
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def variant_number_of(event_data: dict[str, Any]) -> int | None:
    """The variant a dead letter is about, whether stored whole or as its work."""
    for candidate in (event_data, event_data.get("payload")):
        if isinstance(candidate, dict) and isinstance(
            candidate.get("variant_number"), int
        ):
            number: int = candidate["variant_number"]
            return number
    return None


async def load_orders(
    conn: Connection, order_ids: Sequence[uuid.UUID], *, dead_letters: bool = False
) -> list[OrderView]:
    """The orders among ``order_ids`` that exist, in the order asked for."""
    cursor = await conn.execute(
        "select * from orders where id = any(%s)", (list(order_ids),)
    )
    orders = {row["id"]: row for row in await cursor.fetchall()}
    cursor = await conn.execute(
        "select * from song_variants where order_id = any(%s)"
        " order by order_id, variant_number",
        (list(orders),),
    )
    variants: dict[uuid.UUID, list[VariantView]] = {}
    for row in await cursor.fetchall():
        variants.setdefault(row["order_id"], []).append(
            VariantView(
                number=row["variant_number"],
                status=row["status"],
                attempt_count=row["attempt_count"],
                storage_path=row["storage_path"],
                error=row["error"],
                started_at=row["started_at"],
                completed_at=row["completed_at"],
            )
        )
    letters: dict[uuid.UUID, list[DeadLetterView]] = {}
    if dead_letters:
        cursor = await conn.execute(
            "select * from failed_jobs where order_id = any(%s) order by failed_at",
            (list(orders),),
        )
        for row in await cursor.fetchall():
            letters.setdefault(row["order_id"], []).append(DeadLetterView.from_row(row))

    return [
        OrderView(
            id=order["id"],
            user_id=order["user_id"],
            status=order["status"],
            stripe_session_id=order["stripe_session_id"],
            error=order["error"],
            created_at=order["created_at"],
            completed_at=order["completed_at"],
            variants=tuple(variants.get(order_id, ())),
            dead_letters=tuple(letters.get(order_id, ())),
        )
        for order_id in order_ids
        if (order := orders.get(order_id)) is not None
    ]


def song_location(settings: CliSettings, storage_path: str) -> str:
    """Where a song's file is: on this disk, or in the Supabase ``songs`` bucket."""
    if settings.supabase_url:
        return f"{settings.supabase_url}/storage/v1/object/songs/{storage_path}"
    return str((settings.songs_dir / Path(storage_path)).resolve())


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def render_order(order: OrderView, settings: CliSettings) -> RenderableType:
    """The order, its variants and its dead letters, as ``orders show`` prints."""
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Order", str(order.id))
    summary.add_row("Status", status_text(order.status))
    summary.add_row("User", str(order.user_id))
    summary.add_row("Stripe session", order.stripe_session_id)
    summary.add_row("Created", _when(order.created_at))
    summary.add_row("Completed", _when(order.completed_at))
    if order.error:
        summary.add_row("Error", order.error)

    variants = Table(title="Variants", title_justify="left")
    for column in ("#", "Status", "Attempts", "Error"):
        variants.add_column(column, overflow="fold")
    songs = Text("Songs:\n" if order.variants else "", style="bold")
    for variant in order.variants:
        variants.add_row(
            str(variant.number),
            status_text(variant.status),
            str(variant.attempt_count),
            variant.error or "",
        )
        if variant.storage_path:
            location = song_location(settings, variant.storage_path)
            songs.append(f"  variant {variant.number}: {location}\n", style="")

    parts: list[RenderableType] = [summary, variants, songs]
    if order.dead_letters:
        parts.append(render_dead_letters(order.dead_letters, title="Dead letters"))
    return Group(*parts)


def render_dead_letters(
    letters: Sequence[DeadLetterView], *, title: str = "Dead letters"
) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("Id / failed at", no_wrap=True)
    table.add_column("Work", overflow="fold", min_width=20)
    table.add_column("Error", overflow="fold", ratio=1)
    table.add_column("Replayed", min_width=8)
    for letter in letters:
        work = letter.job_type
        if letter.variant_number:
            work += f"\nvariant {letter.variant_number}"
        if letter.order_id:
            work += f"\norder {letter.order_id}"
        replayed = (
            f"{_when(letter.replayed_at)} ({letter.replay_count}x)"
            if letter.replayed_at
            else "no"
        )
        table.add_row(
            f"{letter.id}\n{_when(letter.failed_at)}",
            work,
            f"{letter.error_message[:300]}\n({letter.retry_count} attempts)",
            replayed,
        )
    return table


_STATUS_STYLES = {
    "paid": "cyan",
    "pending": "dim",
    "generating": "yellow",
    "complete": "green",
    "completed": "bold green",
    "failed": "bold red",
}


def status_text(status: str) -> str:
    style = _STATUS_STYLES.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def print_songs(
    console: Console, orders: Sequence[OrderView], settings: CliSettings
) -> None:
    """Say where each finished song is, and why a failed one failed."""
    for order in orders:
        console.print(f"Order {order.id} is [bold]{order.status}[/]:")
        for variant in order.variants:
            if variant.storage_path:
                location = song_location(settings, variant.storage_path)
                console.print(
                    f"  variant {variant.number}: {location}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                reason = variant.error or variant.status
                console.print(
                    f"  variant {variant.number}: no song ({reason})", soft_wrap=True
                )
