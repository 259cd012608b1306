"""Stripe events, signed deliveries and a cuttable TCP proxy for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from songswipe.shared.stripe_signing import signature_header

SECRET = "whsec_test_6f1d2c9a8b7e4d3c2b1a0f9e8d7c6b5a"
WEBHOOK_PATH = "/api/webhook"


def checkout_session(
    customization: dict[str, Any] | None,
    *,
    session_id: str | None = None,
    payment_status: str = "paid",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Checkout session as Stripe sends it, with the product's metadata."""
    if metadata is None:
        assert customization is not None
        metadata = {
            "userId": str(customization["user_id"]),
            "customizationId": str(customization["id"]),
        }
    return {
        "id": session_id or f"cs_test_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "amount_total": 1999,
        "currency": "usd",
        "customer_email": "maya@example.com",
        "livemode": False,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": f"pi_{uuid.uuid4().hex[:24]}",
        "payment_status": payment_status,
        "status": "complete",
    }


def stripe_event(
    data_object: dict[str, Any],
    *,
    event_type: str = "checkout.session.completed",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "data": {"object": data_object},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def signed_headers(
    body: bytes, *, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    return {
        "Stripe-Signature": signature_header(body, secret, timestamp=timestamp),
        "Content-Type": "application/json",
    }


async def deliver(
    client: httpx.AsyncClient,
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    """POST ``event`` signed the way Stripe signs it."""
    body = json.dumps(event).encode()
    return await client.post(
        WEBHOOK_PATH,
        content=body,
        headers=signed_headers(body, secret=secret, timestamp=timestamp),
    )


class TcpProxy:
    """Forwards a local port to ``target``; ``cut()`` drops every connection.

    Stands between a service and Postgres so a test can take the database
    away for real (connections reset, new ones refused) and bring it back.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close the listener and reset every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        self._writers.difference_update((writer, up_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.transport.abort()


async def topic_size(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.assignment()
        assert partitions, f"topic {topic} does not exist"
        ends = await consumer.end_offsets(list(partitions))
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic under ``prefix``, so test runs do not pile up partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
