"""``songswipe-generator``: generate song variants until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from songswipe.generator.service import GeneratorService
from songswipe.generator.settings import GeneratorSettings
from songswipe.shared.errors import PipelineError
from songswipe.shared.logs import configure_logging
from songswipe.shared.metrics import serve_metrics

logger = logging.getLogger("songswipe.generator")


def main() -> None:
    try:
        settings = GeneratorSettings()
    except ValidationError as exc:
        configure_logging()
        logger.error("Generator not started, fix its settings first:\n%s", exc)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)
    # httpx logs every request at INFO; the worker logs what each one meant.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))

    try:
        asyncio.run(_serve(settings))
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
