"""``songswipe-finalizer``: settle orders and store dead letters until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from songswipe.finalizer.service import run
from songswipe.finalizer.settings import FinalizerSettings
from songswipe.shared.errors import PipelineError
from songswipe.shared.logs import configure_logging
from songswipe.shared.metrics import serve_metrics

logger = logging.getLogger(__name__)


async def _serve(settings: FinalizerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = FinalizerSettings()
    except ValidationError as exc:
        configure_logging()
        logger.error("Settings refused, not starting; fix the environment: %s", exc)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)

    serve_metrics(settings.metrics_port, service="finalizer")
    try:
        asyncio.run(_serve(settings))
    except PipelineError as exc:
        logger.error("Finalizer cannot run: %s; fix it, then start it again", exc)
        sys.exit(3)


if __name__ == "__main__":
    main()
