"""``songswipe-finalizer``: settle orders and store dead letters until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from songswipe.finalizer.service import run
from songswipe.finalizer.settings import FinalizerSettings
from songswipe.shared.errors import PipelineError
from songswipe.shared.metrics import serve_metrics
from songswipe.shared.process import run_loop, start_process

logger = logging.getLogger(__name__)


async def _serve(settings: FinalizerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop)


def main() -> None:
    settings = start_process(FinalizerSettings, service="finalizer")
    serve_metrics(settings.metrics_port, service="finalizer")
    try:
        run_loop(_serve(settings))
    except PipelineError as exc:
        logger.error("Finalizer cannot run: %s; fix it, then start it again", exc)
        sys.exit(3)


if __name__ == "__main__":
    main()
