"""The per-order state the table stores: pure rules, no infrastructure."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from songswipe.orchestrator.state import Change, OrderState
from songswipe.shared.messages import SongBrief
from songswipe.shared.statuses import VariantStatus

BRIEF = SongBrief(
    recipient_name="Maya",
    sender_name="Sam",
    occasion="birthday",
    mood="joyful",
    genre="pop",
    length_s=30,
)
COMPLETE = VariantStatus.COMPLETE
FAILED = VariantStatus.FAILED


def new_state(now_s: float = 1000.0) -> OrderState:
    return OrderState.fan_out(
        partition=2, user_id=uuid.uuid4(), brief=BRIEF, now_s=now_s
    )


def test_state_survives_the_changelog_round_trip() -> None:
    state = new_state()
    state.record(2, FAILED)
    state.redispatch(3, 2000.0)

    assert OrderState.from_table(state.to_table()) == state


def test_overdue_variants_are_the_pending_ones_past_the_timeout() -> None:
    state = new_state(now_s=1000.0)
    state.record(1, COMPLETE)
    state.redispatch(2, 1500.0)

    assert state.overdue(1899.0, 900.0) == []
    assert state.overdue(1900.0, 900.0) == [3]
    assert state.overdue(2400.0, 900.0) == [2, 3]
    assert state.variants[2].dispatch == 2


def test_settling_drops_the_brief_and_ends_the_timeouts() -> None:
    state = new_state()
    for n in (1, 2, 3):
        state.record(n, FAILED)
    state.settle(3000.0)

    assert state.settled
    assert state.brief is None
    assert state.overdue(10**9, 1.0) == []
    assert state.counts() == (0, 3)


@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.sampled_from([COMPLETE, FAILED])), max_size=12
    )
)
def test_completions_only_move_forward_and_failed_may_recover(
    completions: list[tuple[int, VariantStatus]],
) -> None:
    state = new_state()
    expected: dict[int, VariantStatus] = {}

    for n, status in completions:
        change = state.record(n, status)

        before = expected.get(n)
        if before is None:
            assert change is Change.RECORDED
            expected[n] = status
        elif before is FAILED and status is COMPLETE:
            assert change is Change.RECOVERED
            expected[n] = status
        else:
            assert change is Change.DUPLICATE
        assert state.variants[n].status is expected[n]

    assert state.all_terminal == (len(expected) == 3)
    assert sum(state.counts()) == len(expected)
