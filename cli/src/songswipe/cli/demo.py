"""Demo orders: a customization row and a signed Stripe event sent to the webhook.

The event goes through the real webhook over HTTP, signed the way Stripe
signs, so a demo order takes exactly the path a paid order takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from songswipe.cli.errors import CliError, ExitCode
from songswipe.cli.settings import CliSettings
from songswipe.shared.db import Connection
from songswipe.shared.stripe_signing import signature_header

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/webhook"
READY_PATH = "/readyz"
DEMO_AMOUNT_CENTS = 1999
SERVICES_HINT = "Start the services with `make run` (or `songswipe run`)."

DEMO_BRIEFS: tuple[dict[str, Any], ...] = (
    {
        "recipient_name": "Maya",
        "sender_name": "Sam",
        "occasion": "birthday",
        "mood": "joyful",
        "genre": "pop",
        "song_length_seconds": 20,
        "memories": "the road trip to the coast, singing with the windows down",
        "things_to_avoid": "sad endings",
    },
    {
        "recipient_name": "Grandpa Joe",
        "sender_name": "the grandkids",
        "occasion": "retirement",
        "mood": "nostalgic",
        "genre": "folk",
        "song_length_seconds": 20,
        "memories": "fishing at dawn, forty years at the railway",
        "things_to_avoid": "",
    },
    {
        "recipient_name": "Priya",
        "sender_name": "Alex",
        "occasion": "anniversary",
        "mood": "romantic",
        "genre": "jazz",
        "song_length_seconds": 20,
        "memories": "the first dance in the rain",
        "things_to_avoid": "anything too slow",
    },
)


async def insert_demo_customization(conn: Connection, index: int) -> dict[str, Any]:
    """A customization for a new demo customer, one of the demo briefs."""
    row = {"user_id": uuid.uuid4(), **DEMO_BRIEFS[index % len(DEMO_BRIEFS)]}
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    cursor = await conn.execute(
        f"insert into customizations ({columns}) values ({placeholders}) returning *",
        tuple(row.values()),
    )
    created = await cursor.fetchone()
    if created is None:
        raise CliError("The demo customization was not stored", code=ExitCode.FAILURE)
    return created


def checkout_completed_event(
    *, session_id: str, user_id: uuid.UUID, customization_id: uuid.UUID
) -> dict[str, Any]:
    """A ``checkout.session.completed`` event as Stripe sends it, paid."""
    return {
        "id": f"evt_demo_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "complete",
                "payment_status": "paid",
                "payment_intent": f"pi_demo_{uuid.uuid4().hex[:24]}",
                "amount_total": DEMO_AMOUNT_CENTS,
                "currency": "usd",
                "metadata": {
                    "userId": str(user_id),
                    "customizationId": str(customization_id),
                },
            }
        },
    }


async def send_event(
    client: httpx.AsyncClient, settings: CliSettings, event: dict[str, Any]
) -> None:
    """POST ``event`` to the webhook with a valid ``Stripe-Signature``."""
    payload = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": signature_header(payload, settings.stripe_webhook_secret),
    }
    url = settings.webhook_base_url + WEBHOOK_PATH
    try:
        response = await client.post(url, content=payload, headers=headers)
    except httpx.HTTPError as exc:
        raise CliError(
            f"The webhook at {url} did not answer: {exc!r}",
            code=ExitCode.SERVICES_FAILED,
            hint=SERVICES_HINT,
        ) from exc
    if response.status_code != httpx.codes.OK:
        raise CliError(
            f"The webhook refused the demo event with {response.status_code}:"
            f" {response.text[:200]}",
            code=ExitCode.SERVICES_FAILED,
            hint="Is STRIPE_WEBHOOK_SECRET the same for the webhook and the CLI?",
        )


async def wait_until_ready(
    client: httpx.AsyncClient,
    settings: CliSettings,
    *,
    timeout_s: float,
    check_alive: Callable[[], None] = lambda: None,
) -> None:
    """Poll the webhook's ``/readyz`` until it answers 200.

    ``check_alive`` raises when a service the caller started has exited, so a
    crash is reported at once instead of after the timeout.
    """
    url = settings.webhook_base_url + READY_PATH
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        check_alive()
        try:
            response = await client.get(url, timeout=2.0)
        except httpx.HTTPError as exc:
            last_problem = repr(exc)
        else:
            if response.status_code == httpx.codes.OK:
                return
            last_problem = f"{response.status_code} {response.text[:200]}"
        await asyncio.sleep(0.25)
    raise CliError(
        f"The webhook at {url} was not ready within {timeout_s:.0f} s ({last_problem})",
        code=ExitCode.SERVICES_FAILED,
        hint=SERVICES_HINT,
    )


async def place_demo_order(
    conn: Connection, client: httpx.AsyncClient, settings: CliSettings, index: int
) -> uuid.UUID:
    """Place one paid demo order through the webhook; return the order's id."""
    customization = await insert_demo_customization(conn, index)
    session_id = f"cs_test_demo_{uuid.uuid4().hex}"
    event = checkout_completed_event(
        session_id=session_id,
        user_id=customization["user_id"],
        customization_id=customization["id"],
    )
    await send_event(client, settings, event)

    cursor = await conn.execute(
        "select id from orders where stripe_session_id = %s", (session_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        raise CliError(
            f"The webhook answered 200 but recorded no order for {session_id}",
            code=ExitCode.SERVICES_FAILED,
        )
    order_id: uuid.UUID = row["id"]
    logger.info("Placed demo order order_id=%s session=%s", order_id, session_id)
    return order_id
