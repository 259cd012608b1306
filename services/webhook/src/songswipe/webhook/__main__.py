"""``songswipe-webhook``: serve the Stripe webhook with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from songswipe.shared.logs import configure_logging
from songswipe.webhook.app import WEBHOOK_PATH, create_app
from songswipe.webhook.server import server_config
from songswipe.webhook.settings import WebhookSettings

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        settings = WebhookSettings()
    except ValidationError as exc:
        configure_logging()
        logger.error("Settings refused, not starting; fix the environment: %s", exc)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)

    app = create_app(settings)
    config = server_config(app, host=settings.webhook_host, port=settings.webhook_port)
    logger.info(
        "Serving %s on %s:%d",
        WEBHOOK_PATH,
        settings.webhook_host,
        settings.webhook_port,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        logger.error("Webhook did not start; see the errors above, then restart it")
        sys.exit(3)


if __name__ == "__main__":
    main()
