"""Whatever arrives, the webhook never answers 5xx and never writes a row."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from songswipe.shared.db import Connection
from songswipe.shared.stripe_signing import signature_header
from tests.webhook.helpers import SECRET, WEBHOOK_PATH

printable = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
# JSON that looks like an event envelope, but never of a type that writes.
event_like = st.fixed_dictionaries(
    {
        "id": printable | st.from_regex(r"\Aevt_[A-Za-z0-9]{1,24}\Z"),
        "object": st.sampled_from(["event", "charge", ""]),
        "type": printable,
        "data": json_values
        | st.fixed_dictionaries(
            {"object": st.dictionaries(st.text(max_size=10), json_values, max_size=5)}
        ),
    },
    optional={"livemode": st.booleans()},
)
bodies = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=500).map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
    event_like.map(lambda value: json.dumps(value).encode()),
)


@st.composite
def signature_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    now = int(time.time())
    choice = draw(st.sampled_from(["signed", "stale", "garbled", "random", "none"]))
    if choice == "signed":
        return {"Stripe-Signature": signature_header(body, SECRET)}
    if choice == "stale":
        return {
            "Stripe-Signature": signature_header(body, SECRET, timestamp=now - 3600)
        }
    if choice == "garbled":
        timestamp = draw(st.integers(min_value=-(2**70), max_value=2**70))
        digest = draw(printable)
        return {"Stripe-Signature": f"t={timestamp},v1={digest}"}
    if choice == "random":
        return {"Stripe-Signature": draw(printable)}
    return {}


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(bodies)
    headers = draw(signature_headers(body))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(printable)
    return body, headers


async def row_count(db: Connection) -> int:
    cursor = await db.execute(
        "select (select count(*) from orders) + (select count(*) from stripe_events)"
        " + (select count(*) from failed_jobs) as n"
    )
    row: dict[str, Any] | None = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries())
async def test_random_deliveries_never_fail_the_server_nor_write(
    client: httpx.AsyncClient, db: Connection, delivery: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = delivery

    response = await client.post(WEBHOOK_PATH, content=body, headers=headers)

    event(f"{response.status_code} {response.json().get('error', 'ignored')}")
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json()["outcome"] == "ignored"
    assert await row_count(db) == 0
