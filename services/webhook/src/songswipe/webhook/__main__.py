"""``songswipe-webhook``: serve the Stripe webhook with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from songswipe.shared.process import start_process
from songswipe.webhook.app import WEBHOOK_PATH, create_app
from songswipe.webhook.server import server_config
from songswipe.webhook.settings import WebhookSettings

logger = logging.getLogger(__name__)


def main() -> None:
    settings = start_process(WebhookSettings, service="webhook")

    if settings.uses_placeholder_secret:
        logger.warning(
            "STRIPE_WEBHOOK_SECRET is the public development placeholder: whoever"
            " reaches %s:%d can place orders. Set the endpoint's signing secret"
            " from the Stripe dashboard before this port is reachable from"
            " outside",
            settings.webhook_host,
            settings.webhook_port,
        )

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
