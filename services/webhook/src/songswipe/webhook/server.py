"""How uvicorn serves the webhook; the benchmark's bare app uses the same."""

from __future__ import annotations

from typing import Any

import uvicorn

#: Stripe waits up to about 10 s; in-flight deliveries get that long to finish.
GRACEFUL_SHUTDOWN_S = 10


def server_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    """One process, one event loop; scale by running more processes."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
