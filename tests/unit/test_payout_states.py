from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpay.payout_states import (
    EVENTS,
    OPEN,
    STATES,
    TERMINAL,
    IllegalTransition,
    PayoutEvent,
    PayoutState,
    Transition,
    transition,
)

# Every transition that changes the state; anything else is a no-op or illegal.
MOVES: dict[tuple[PayoutState, PayoutEvent], PayoutState] = {
    # docs/design.md §3
    ("pending", "claim"): "submitting",
    ("submitting", "not_sent"): "pending",  # the request surely never left: send again later
    ("submitting", "accepted"): "submitted",
    ("submitting", "rejected"): "failed",
    ("submitting", "ambiguous"): "unknown",
    ("submitting", "result_success"): "paid",  # the result overtook the HTTP response
    ("submitted", "result_success"): "paid",
    ("unknown", "result_success"): "paid",
    ("submitting", "result_failure"): "failed",
    ("submitted", "result_failure"): "failed",
    ("unknown", "result_failure"): "failed",
    ("submitted", "status_paid"): "paid",
    ("unknown", "status_paid"): "paid",
    ("unknown", "status_not_found"): "pending",
    # proof of payment always wins, also where docs/design.md draws no arrow
    ("pending", "result_success"): "paid",
    ("pending", "status_paid"): "paid",
    ("submitting", "status_paid"): "paid",
}
# A sender reporting an HTTP outcome without holding the claim: a bug.
ILLEGAL = {
    (state, event)
    for state in ("pending", "submitted", "unknown")
    for event in ("not_sent", "accepted", "rejected", "ambiguous")
}


def test_states_match_the_database() -> None:
    assert STATES == {"pending", "submitting", "submitted", "paid", "failed", "unknown"}
    assert TERMINAL == {"paid", "failed"}
    assert OPEN == STATES - TERMINAL


@pytest.mark.parametrize(("state", "event"), sorted(MOVES))
def test_moves(state: PayoutState, event: PayoutEvent) -> None:
    assert transition(state, event) == Transition(MOVES[state, event], changed=True)


@pytest.mark.parametrize(("state", "event"), sorted(ILLEGAL))
def test_illegal(state: PayoutState, event: PayoutEvent) -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(state, event)
    assert (caught.value.state, caught.value.event) == (state, event)


NO_OPS = sorted({(s, e) for s in STATES for e in EVENTS} - set(MOVES) - ILLEGAL)


@pytest.mark.parametrize(("state", "event"), NO_OPS)
def test_everything_else_is_a_no_op(state: PayoutState, event: PayoutEvent) -> None:
    assert transition(state, event) == Transition(state, changed=False)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("submitting", "claim"),  # a redelivered send message must not send twice
        ("submitted", "claim"),
        ("unknown", "claim"),  # only a status query may reopen an unknown payout
        ("pending", "result_failure"),  # stale: this attempt is already proven unpaid
        ("submitted", "status_not_found"),  # accepted: Safaricom may still pay it
        ("paid", "result_failure"),
        ("paid", "status_not_found"),
        ("failed", "result_success"),
        ("paid", "accepted"),  # the result overtook the HTTP response
    ],
)
def test_documented_no_ops(state: PayoutState, event: PayoutEvent) -> None:
    assert transition(state, event) == Transition(state, changed=False)


@pytest.mark.parametrize(("state", "event"), [("bogus", "claim"), ("pending", "bogus")])
def test_unknown_names_are_refused(state: str, event: str) -> None:
    with pytest.raises(ValueError, match="unknown payout"):
        transition(state, event)  # type: ignore[arg-type]


def test_timeout_then_success_ends_paid() -> None:
    """docs/design.md §4: a B2C timeout callback, then the success result."""
    state: PayoutState = "pending"
    for event in ("claim", "accepted", "queue_timeout", "result_success", "queue_timeout"):
        state = transition(state, event).new_state
    assert state == "paid"


def test_ambiguous_send_is_retried_only_after_a_status_query() -> None:
    state: PayoutState = "pending"
    for event in ("claim", "ambiguous", "claim", "queue_timeout"):
        state = transition(state, event).new_state
    assert state == "unknown"
    assert transition(state, "status_not_found").new_state == "pending"


events = st.sampled_from(sorted(EVENTS))


def run(state: PayoutState, sequence: list[PayoutEvent]) -> list[PayoutState]:
    """The states visited, skipping events that are illegal where they arrive."""
    visited = [state]
    for event in sequence:
        try:
            state = transition(state, event).new_state
        except IllegalTransition:
            continue
        visited.append(state)
    return visited


@settings(max_examples=300)
@given(st.sampled_from(sorted(TERMINAL)), st.lists(events, max_size=30))
def test_terminal_states_absorb_every_event(
    state: PayoutState, sequence: list[PayoutEvent]
) -> None:
    for event in sequence:
        assert transition(state, event) == Transition(state, changed=False)


@settings(max_examples=100)
@given(st.sampled_from(sorted(STATES)))
def test_queue_timeout_never_changes_state(state: PayoutState) -> None:
    assert transition(state, "queue_timeout") == Transition(state, changed=False)


@settings(max_examples=300)
@given(st.sampled_from(sorted(STATES)), st.lists(events, max_size=30))
def test_once_terminal_always_terminal(state: PayoutState, sequence: list[PayoutEvent]) -> None:
    visited = run(state, sequence)
    for index, reached in enumerate(visited):
        if reached in TERMINAL:
            assert set(visited[index:]) == {reached}


@settings(max_examples=300)
@given(st.lists(events, max_size=30))
def test_every_change_follows_a_known_edge(sequence: list[PayoutEvent]) -> None:
    state: PayoutState = "pending"
    for event in sequence:
        try:
            result = transition(state, event)
        except IllegalTransition:
            assert (state, event) in ILLEGAL
            continue
        assert result.changed == (result.new_state != state)
        if result.changed:
            assert MOVES[state, event] == result.new_state
        state = result.new_state
