"""Following orders live: a table that changes as their statuses do."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table

from songswipe.cli.errors import CliError, ExitCode
from songswipe.cli.orders import VARIANT_COUNT, OrderView, load_orders, status_text
from songswipe.shared.db import Connection

POLL_INTERVAL_S = 0.25
#: Following more orders than this, only order-level changes are printed.
CHANGE_LINES_MAX_ORDERS = 3

Snapshot = tuple[str, tuple[tuple[str, int], ...]]


def progress_table(orders: Sequence[OrderView], started_s: float) -> Table:
    table = Table(title="Orders", title_justify="left")
    table.add_column("Order")
    table.add_column("Status")
    for number in range(1, VARIANT_COUNT + 1):
        table.add_column(f"Variant {number}")
    table.add_column("Elapsed", justify="right")

    elapsed = f"{time.monotonic() - started_s:.1f} s"
    for order in orders:
        cells = [
            f"{status_text(v.status)} (attempt {v.attempt_count})"
            for v in order.variants
        ]
        cells += ["-"] * (VARIANT_COUNT - len(cells))
        short_id = str(order.id).split("-", 1)[0]
        table.add_row(short_id, status_text(order.status), *cells, elapsed)
    return table


def _snapshot(order: OrderView) -> Snapshot:
    return order.status, tuple((v.status, v.attempt_count) for v in order.variants)


def _changes(before: Snapshot | None, order: OrderView, *, variants: bool) -> list[str]:
    stamp = datetime.now().strftime("%H:%M:%S")
    order_lines: list[str] = []
    if before is None or before[0] != order.status:
        order_lines.append(f"{stamp} order {order.id} {status_text(order.status)}")
    if not variants:
        return order_lines

    variant_lines: list[str] = []
    previous = dict(enumerate(before[1])) if before else {}
    for index, variant in enumerate(order.variants):
        if previous.get(index) != (variant.status, variant.attempt_count):
            variant_lines.append(
                f"{stamp}   variant {variant.number} {status_text(variant.status)}"
                f" (attempt {variant.attempt_count})"
                + (f": {variant.error}" if variant.error else "")
            )
    # A settled order follows the variants that settled it, as it did in time.
    if order.settled:
        return variant_lines + order_lines
    return order_lines + variant_lines


async def follow(
    conn: Connection,
    order_ids: Sequence[uuid.UUID],
    *,
    console: Console,
    timeout_s: float,
    check_alive: Callable[[], None] = lambda: None,
) -> list[OrderView]:
    """Show the orders until every one has settled; return them settled.

    Raises ``CliError`` (timed out) when they have not settled in ``timeout_s``.
    """
    started_s = time.monotonic()
    deadline = started_s + timeout_s
    seen: dict[uuid.UUID, Snapshot] = {}
    variant_lines = len(order_ids) <= CHANGE_LINES_MAX_ORDERS

    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            orders = await load_orders(conn, order_ids)
            for order in orders:
                for line in _changes(seen.get(order.id), order, variants=variant_lines):
                    live.console.print(line, highlight=False, soft_wrap=True)
                seen[order.id] = _snapshot(order)
            live.update(progress_table(orders, started_s))

            if len(orders) == len(order_ids) and all(o.settled for o in orders):
                break
            if time.monotonic() >= deadline:
                unsettled = [str(o.id) for o in orders if not o.settled]
                raise CliError(
                    f"{len(unsettled)} order(s) did not settle within"
                    f" {timeout_s:.0f} s: {', '.join(unsettled)}",
                    code=ExitCode.TIMED_OUT,
                    hint="See the services' logs; `songswipe orders show ID`"
                    " tells where each one stands.",
                )
            check_alive()
            await asyncio.sleep(POLL_INTERVAL_S)
    if not console.is_terminal:
        console.line()
    return orders
