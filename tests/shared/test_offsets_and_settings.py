"""Finished-only commits and settings validation."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from songswipe.shared.kafka import OffsetTracker
from songswipe.shared.settings import ServiceSettings

TP = TopicPartition("variant.generate", 0)


def test_commit_waits_for_the_oldest_unfinished_message() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start(TP, offset)

    tracker.finish(TP, 12)
    tracker.finish(TP, 11)
    assert tracker.take_committable() == {}

    tracker.finish(TP, 10)
    assert tracker.take_committable() == {TP: 13}
    assert tracker.take_committable() == {}
    assert tracker.in_flight == 0


def test_commit_advances_as_far_as_the_finished_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2, 3):
        tracker.start(TP, offset)

    tracker.finish(TP, 0)
    tracker.finish(TP, 2)

    assert tracker.take_committable() == {TP: 1}
    assert tracker.in_flight == 2


def test_database_url_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:6543/postgres")

    assert ServiceSettings().database_url == "postgresql://u:p@db:6543/postgres"


def test_database_url_must_be_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:p@db/x")

    with pytest.raises(ValidationError, match="postgresql://"):
        ServiceSettings()
