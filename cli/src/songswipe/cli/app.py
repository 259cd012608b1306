"""The ``songswipe`` commands; each one is a thin layer over a module."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from songswipe.cli import dlq as dlq_module
from songswipe.cli.errors import EXIT_CODES_HELP, CliError, ExitCode, as_cli_error
from songswipe.cli.orders import load_orders, render_dead_letters, render_order
from songswipe.cli.run import run_demo, run_pipeline
from songswipe.cli.settings import CliSettings
from songswipe.cli.supervisor import stop_recorded
from songswipe.shared.db import connect
from songswipe.shared.logs import configure_logging
from songswipe.shared.validation import describe_invalid

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Run the SongSwipe pipeline on this machine, place demo orders, look at"
    " orders and replay dead letters.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
orders_app = typer.Typer(help="Look at orders.", epilog=EXIT_CODES_HELP)
dlq_app = typer.Typer(
    help="Dead letters: work that failed for good.", epilog=EXIT_CODES_HELP
)
app.add_typer(orders_app, name="orders")
app.add_typer(dlq_app, name="dlq")

console = Console()
err_console = Console(stderr=True)


@app.callback()
def _load_settings(ctx: typer.Context) -> None:
    if isinstance(ctx.obj, CliSettings):
        return
    try:
        ctx.obj = CliSettings()
    except ValidationError as exc:
        problems = describe_invalid(exc, whole="settings")
        err_console.print(
            f"[bold red]Error:[/] the settings are invalid: {escape(problems)}"
        )
        raise typer.Exit(ExitCode.USAGE) from None
    level = "DEBUG" if ctx.obj.log_level == "DEBUG" else "WARNING"
    configure_logging(level, ctx.obj.log_format, secrets=ctx.obj.secret_values())
    if level != "DEBUG":
        # The CLI reports an unreachable broker itself, in one line.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _settings(ctx: typer.Context) -> CliSettings:
    root = ctx.find_root()
    if not isinstance(root.obj, CliSettings):
        raise RuntimeError("settings were not loaded")
    return root.obj


def _execute(
    ctx: typer.Context,
    work: Callable[[CliSettings], Coroutine[Any, Any, ExitCode | None]],
) -> None:
    """Run ``work`` on a fresh event loop, turning known failures into exit codes."""
    settings = _settings(ctx)
    try:
        code = asyncio.run(_cancellable(work(settings)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        err_console.print("Interrupted.")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except Exception as exc:
        error = as_cli_error(exc)
        if error is None:
            raise
        err_console.print(f"[bold red]Error:[/] {error.message}", highlight=False)
        if error.hint:
            err_console.print(error.hint, highlight=False)
        raise typer.Exit(error.code) from None
    if code:
        raise typer.Exit(code)


async def _cancellable(
    work: Coroutine[Any, Any, ExitCode | None],
) -> ExitCode | None:
    """Let SIGTERM and SIGHUP stop ``work`` as Ctrl-C does, so its clean-up runs.

    A closed terminal (SIGHUP) must not leave the services running.
    """
    task = asyncio.current_task()
    if task is not None and threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
    return await work


@app.command()
def run(ctx: typer.Context) -> None:
    """Start the four services, place a demo order and follow it live.

    Each service logs to its own file under SONGSWIPE_LOG_DIR. The services
    keep running until Ctrl-C (or SIGTERM), which stops them cleanly.
    """

    async def work(settings: CliSettings) -> None:
        await run_pipeline(settings, console)

    _execute(ctx, work)


@app.command()
def demo(
    ctx: typer.Context,
    orders: Annotated[
        int, typer.Option("--orders", "-n", min=1, max=500, help="How many orders.")
    ] = 1,
) -> None:
    """Place demo orders through the running webhook and follow them."""

    async def work(settings: CliSettings) -> None:
        await run_demo(settings, console, orders=orders)

    _execute(ctx, work)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the services an earlier `songswipe run` left running."""
    settings = _settings(ctx)
    outcome = stop_recorded(
        settings.songswipe_run_dir, timeout_s=settings.service_stop_timeout_s
    )
    if not outcome:
        console.print("No songswipe service was running.")
    for service, how in outcome.items():
        console.print(f"{service} {how}")


@orders_app.command("show")
def orders_show(
    ctx: typer.Context,
    order_id: Annotated[uuid.UUID, typer.Argument(help="The order's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The order, its variants with attempts, errors and songs, its dead letters."""

    async def work(settings: CliSettings) -> None:
        conn = await connect(settings.database_url)
        try:
            found = await load_orders(conn, [order_id], dead_letters=True)
        finally:
            await conn.close()
        if not found:
            raise CliError(f"No order with id {order_id}", code=ExitCode.NOT_FOUND)
        if as_json:
            typer.echo(json.dumps(found[0].as_json(), default=str, indent=2))
        else:
            console.print(render_order(found[0], settings))

    _execute(ctx, work)


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    not_replayed: Annotated[
        bool, typer.Option("--not-replayed", help="Only those not replayed yet.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What failed for good and why, newest first."""

    async def work(settings: CliSettings) -> None:
        conn = await connect(settings.database_url)
        try:
            letters = await dlq_module.list_dead_letters(
                conn, not_replayed=not_replayed, limit=limit
            )
        finally:
            await conn.close()
        if as_json:
            typer.echo(json.dumps([asdict(x) for x in letters], default=str, indent=2))
        elif not letters:
            console.print("No dead letters.")
        else:
            console.print(render_dead_letters(letters))

    _execute(ctx, work)


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    dead_letter_id: Annotated[
        uuid.UUID | None, typer.Argument(help="The dead letter's id.")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every dead letter not replayed yet.")
    ] = False,
) -> None:
    """Send failed work back to its topic with fresh attempts.

    A variant goes back to pending with attempt 1. A dead letter whose variant
    is no longer failed (already replayed, or done) is refused, so replaying
    twice never generates twice.
    """
    if (dead_letter_id is None) == (not replay_all):
        err_console.print("Give one dead letter id, or --all.")
        raise typer.Exit(ExitCode.USAGE)

    async def work(settings: CliSettings) -> ExitCode:
        conn = await connect(settings.database_url)
        try:
            async with dlq_module.replay_producer(settings) as producer:
                ids = (
                    [dead_letter_id]
                    if dead_letter_id is not None
                    else await dlq_module.dead_letters_to_replay(conn)
                )
                results = [
                    await dlq_module.replay(conn, producer, settings.topics, one)
                    for one in ids
                ]
        finally:
            await conn.close()

        if not results:
            console.print("Nothing to replay.")
        for result in results:
            verdict = "[green]replayed[/]" if result.replayed else "[yellow]refused[/]"
            console.print(f"{result.dead_letter_id} {verdict}: {result.detail}")
        refused = any(not r.replayed for r in results)
        return ExitCode.REFUSED if refused and dead_letter_id else ExitCode.OK

    _execute(ctx, work)
