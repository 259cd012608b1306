"""``songswipe run`` and ``songswipe demo``: the pipeline with demo orders."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import httpx
from rich.console import Console

from songswipe.cli.demo import place_demo_order, wait_until_ready
from songswipe.cli.orders import OrderView, print_songs
from songswipe.cli.progress import follow
from songswipe.cli.settings import CliSettings
from songswipe.cli.supervisor import SERVICES, Supervisor
from songswipe.shared.db import Connection, connect
from songswipe.shared.kafka import ensure_topics

logger = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 10.0
#: ``demo`` expects running services, so it gives up on the webhook sooner.
DEMO_READY_TIMEOUT_S = 10.0


#: The workers, in the order their metrics ports are handed out.
METRICS_WORKERS = ("orchestrator", "generator", "finalizer")


def service_environment(settings: CliSettings) -> dict[str, dict[str, str]]:
    """What each service gets on top of this process's environment.

    The workers share one environment and one ``.env``, so each gets a
    ``METRICS_PORT`` of its own here.
    """
    environment: dict[str, dict[str, str]] = {service: {} for service in SERVICES}
    base = settings.songswipe_metrics_port_base
    for offset, service in enumerate(METRICS_WORKERS):
        environment[service]["METRICS_PORT"] = str(base + offset if base else 0)
    return environment


def metrics_urls(settings: CliSettings) -> dict[str, str]:
    """Where each service serves ``/metrics`` when ``songswipe run`` starts it."""
    urls = {"webhook": f"{settings.webhook_base_url}/metrics"}
    base = settings.songswipe_metrics_port_base
    if base:
        for offset, service in enumerate(METRICS_WORKERS):
            urls[service] = f"http://127.0.0.1:{base + offset}/metrics"
    return urls


async def run_pipeline(settings: CliSettings, console: Console) -> None:
    """Start the services, place a demo order, follow it, run until cancelled."""
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.topics.specs(settings.kafka_partitions),
    )
    conn = await connect(settings.database_url)
    supervisor = Supervisor(
        log_dir=settings.songswipe_log_dir,
        run_dir=settings.songswipe_run_dir,
        environment=service_environment(settings),
    )
    try:
        supervisor.refuse_if_running()
        supervisor.start()
        console.print("Started the services; their logs and metrics:")
        urls = metrics_urls(settings)
        for running in supervisor.processes:
            console.print(
                f"  {running.service:<13} pid {running.process.pid:<7}"
                f" {running.log_path.resolve()}  {urls.get(running.service, '')}",
                highlight=False,
                soft_wrap=True,
            )

        await place_and_follow(
            conn,
            settings,
            console,
            orders=1,
            ready_timeout_s=settings.service_start_timeout_s,
            check_alive=supervisor.check_alive,
        )
        console.print(
            "\nThe services keep running: try `songswipe demo --orders 5` in"
            " another terminal. Press Ctrl-C to stop them."
        )
        await supervisor.watch()
    finally:
        await conn.close()
        stop_services(supervisor, console, timeout_s=settings.service_stop_timeout_s)


def stop_services(
    supervisor: Supervisor, console: Console, *, timeout_s: float
) -> None:
    """Stop what ``run`` started, even when its terminal is gone."""
    if not supervisor.processes:
        return

    try:
        console.print("Stopping the services (SIGTERM) ...")
    finally:
        # ``make run | tee`` interrupted loses ``tee`` first, and Rich turns
        # the broken pipe into SystemExit: the services must stop all the same.
        outcome = supervisor.stop(timeout_s=timeout_s)
    for service, how in outcome.items():
        console.print(f"  {service} {how}")


async def run_demo(settings: CliSettings, console: Console, *, orders: int) -> None:
    """Place demo orders with services that already run, and follow them."""
    conn = await connect(settings.database_url)
    try:
        await place_and_follow(
            conn,
            settings,
            console,
            orders=orders,
            ready_timeout_s=min(DEMO_READY_TIMEOUT_S, settings.service_start_timeout_s),
        )
    finally:
        await conn.close()


async def place_and_follow(
    conn: Connection,
    settings: CliSettings,
    console: Console,
    *,
    orders: int,
    ready_timeout_s: float,
    check_alive: Callable[[], None] = lambda: None,
) -> list[OrderView]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
        with console.status("Waiting for the webhook to be ready ..."):
            await wait_until_ready(
                client,
                settings,
                timeout_s=ready_timeout_s,
                check_alive=check_alive,
            )
        order_ids: list[uuid.UUID] = []
        for index in range(orders):
            order_ids.append(await place_demo_order(conn, client, settings, index))
    console.print(
        f"Placed {orders} demo order(s) through {settings.webhook_base_url}"
        " with a signed checkout.session.completed"
    )

    settled = await follow(
        conn,
        order_ids,
        console=console,
        timeout_s=settings.demo_timeout_s,
        check_alive=check_alive,
    )
    print_songs(console, settled, settings)
    return settled
