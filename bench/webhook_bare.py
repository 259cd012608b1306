"""The benchmark's baseline: a FastAPI endpoint that only answers 200.

Served exactly as ``songswipe-webhook`` is served (``server_config``), so the
difference in the figures is the webhook's own work.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from songswipe.shared.logs import configure_logging
from songswipe.webhook.server import server_config

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/api/webhook")
async def bare() -> Response:
    return JSONResponse({"received": True})


@app.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging("WARNING")
    uvicorn.Server(server_config(app, host=args.host, port=args.port)).run()


if __name__ == "__main__":
    main()
