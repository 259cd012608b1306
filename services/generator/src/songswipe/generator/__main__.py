"""``songswipe-generator``: generate song variants until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from songswipe.generator.service import GeneratorService
from songswipe.generator.settings import GeneratorSettings
from songswipe.shared.errors import PipelineError
from songswipe.shared.metrics import serve_metrics
from songswipe.shared.process import run_loop, start_process

logger = logging.getLogger("songswipe.generator")


def main() -> None:
    # httpx logs every request at INFO; the worker logs what each one meant.
    settings = start_process(
        GeneratorSettings, service="generator", quiet_loggers=("httpx",)
    )

    try:
        run_loop(_serve(settings))
    except PipelineError as exc:
        logger.error("Generator stopped: %s. Are Kafka and Postgres up?", exc)
        sys.exit(2)


async def _serve(settings: GeneratorSettings) -> None:
    serve_metrics(settings.metrics_port, service="generator")
    service = GeneratorService(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_stop)
    await service.run()


if __name__ == "__main__":
    main()
