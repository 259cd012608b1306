"""``songswipe orders show``: the order, its variants, attempts, errors, songs."""

from __future__ import annotations

import json
import uuid

from songswipe.cli.errors import ExitCode
from songswipe.shared.db import Connection
from songswipe.shared.topics import Topics
from tests.cli.cli import invoke, settings_for
from tests.cli.seed import insert_dead_letter
from tests.support import order_with_outcomes


async def test_show_prints_variants_attempts_errors_and_songs(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db,
        order_status="completed",
        variant_statuses=("complete", "complete", "failed"),
    )
    letter = await insert_dead_letter(db, topics, order=order, variant_number=3)
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "orders", "show", str(order["id"]), "--json")

    assert result.exit_code == ExitCode.OK, result.output
    shown = json.loads(result.stdout)
    assert shown["status"] == "completed"
    assert [v["status"] for v in shown["variants"]] == [
        "complete",
        "complete",
        "failed",
    ]
    assert [v["attempt_count"] for v in shown["variants"]] == [1, 1, 5]
    assert shown["variants"][0]["storage_path"].endswith(f"{order['id']}/variant-1.mp3")
    assert "500" in shown["variants"][2]["error"]
    assert [d["id"] for d in shown["dead_letters"]] == [str(letter.message_id)]
    assert shown["dead_letters"][0]["variant_number"] == 3


async def test_show_as_a_table_names_the_song_files(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    order = await order_with_outcomes(
        db,
        order_status="generating",
        variant_statuses=("complete", "generating", "pending"),
    )
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "orders", "show", str(order["id"]))

    assert result.exit_code == ExitCode.OK, result.output
    flat = "".join(result.stdout.split())
    assert str(order["id"]) in flat
    assert "variant-1.mp3" in flat
    assert "generating" in result.stdout
    assert "pending" in result.stdout


async def test_unknown_order_exits_not_found(
    db: Connection, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topics=topics
    )

    result = await invoke(settings, "orders", "show", str(uuid.uuid4()))

    assert result.exit_code == ExitCode.NOT_FOUND
    assert "No order" in result.stderr
