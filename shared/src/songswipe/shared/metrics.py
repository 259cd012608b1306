"""Prometheus metrics: the workers serve ``/metrics`` on a small port each."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

logger = logging.getLogger(__name__)


def serve_metrics(port: int, *, service: str) -> None:
    """Serve the default registry on ``port``; ``0`` turns metrics off."""
    if port == 0:
        logger.info("Metrics off for service=%s (METRICS_PORT=0)", service)
        return
    start_http_server(port)
    logger.info("Serving metrics for service=%s on :%d/metrics", service, port)
