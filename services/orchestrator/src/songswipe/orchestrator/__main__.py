"""``songswipe-orchestrator``: run the faust worker."""

from __future__ import annotations

import logging

import faust

from songswipe.orchestrator.app import Orchestrator
from songswipe.orchestrator.resources import ResourcesService
from songswipe.orchestrator.settings import OrchestratorSettings
from songswipe.shared.metrics import serve_metrics
from songswipe.shared.process import start_process, use_uvloop

logger = logging.getLogger(__name__)

#: faust and mode narrate every start-up step at INFO.
CHATTY_LOGGERS = ("faust", "mode")


def main() -> None:
    settings = start_process(
        OrchestratorSettings, service="orchestrator", quiet_loggers=CHATTY_LOGGERS
    )

    serve_metrics(settings.metrics_port, service="orchestrator")
    use_uvloop()
    orchestrator = Orchestrator(settings)
    worker = faust.Worker(
        orchestrator.app,
        ResourcesService(orchestrator.resources),
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    # The progress spinner is for terminals; it would write escape codes to logs.
    worker.spinner = None
    logger.info(
        "Orchestrator starting: app_id=%s partitions=%d generation_timeout_s=%.0f",
        settings.topics.orchestrator_app_id,
        settings.kafka_partitions,
        settings.orchestrator_generation_timeout_s,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
