"""The payout state machine (``fleetpay.payout_states``): its table, and properties over random
sequences of sends, results, status answers, mismatches and retries, checked against models
written here independently of the implementation."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpay.payout_states import (
    EVENTS,
    OPEN,
    STATE_ORDER,
    STATES,
    TERMINAL,
    IllegalTransition,
    PayoutEvent,
    PayoutState,
    Transition,
    sending_event,
    transition,
)

# Every transition that changes the state; anything else is a no-op or illegal.
MOVES: dict[tuple[PayoutState, PayoutEvent], PayoutState] = {
    # docs/design.md §3
    ("pending", "claim"): "submitting",
    ("submitting", "not_sent"): "pending",  # the request surely never left: send again later
    ("submitting", "accepted"): "submitted",
    ("submitting", "rejected"): "failed",  # Daraja refused our request outright: M-Pesa never had it
    ("submitting", "ambiguous"): "unknown",
    # a failure result only reports: our own status query confirms it
    ("submitting", "result_failure"): "failure_reported",
    ("submitted", "result_failure"): "failure_reported",
    ("unknown", "result_failure"): "failure_reported",
    ("submitted", "status_failed"): "failed",
    ("unknown", "status_failed"): "failed",
    ("failure_reported", "status_failed"): "failed",
    ("review", "status_failed"): "failed",
    # M-Pesa does not know it (or has not caught up): send again with the same id, which Daraja
    # refuses as a duplicate if it did have it
    ("failure_reported", "status_not_found"): "pending",
    ("unknown", "status_not_found"): "pending",
    ("review", "status_not_found"): "pending",
    # a result that does not match what we asked: an operator looks; no money moves
    **{(state, "mismatch"): "review" for state in ("pending", "submitting", "submitted", "unknown", "failure_reported")},
    # we cannot find out by ourselves: only a payout waiting for a status answer
    **{(state, "escalate"): "review" for state in ("submitted", "unknown", "failure_reported")},
    # a matching success callback for a failed payout: its money back in flight until our query answers
    ("failed", "result_success"): "reopened",
    ("reopened", "status_paid"): "paid",
    ("reopened", "status_failed"): "failed",
    # proof of payment wins, from every open state; from failed, only our own status query's
    **{(state, event): "paid"
       for state in ("pending", "submitting", "submitted", "unknown", "failure_reported", "review")
       for event in ("result_success", "status_paid")},
    ("failed", "status_paid"): "paid",
    # an operator withdraws a payout never sent (a reinstated driver's deposit refund)
    ("pending", "withdraw"): "failed",
}
# A sender reporting an HTTP outcome without holding the claim: a bug, or a claim lost to a result
# that overtook the HTTP answer (the sender logs it and changes nothing).
ILLEGAL = {
    (state, event)
    for state in ("pending", "submitted", "unknown", "failure_reported", "review", "reopened")
    for event in ("not_sent", "accepted", "rejected", "ambiguous")
}


def test_states_match_the_database() -> None:
    assert STATE_ORDER == ("pending", "submitting", "submitted", "unknown", "failure_reported", "review", "reopened",
                           "paid", "failed")
    assert STATES == set(STATE_ORDER)
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
        ("failure_reported", "claim"),
        ("review", "claim"),
        ("pending", "result_failure"),  # stale: this attempt is already proven unpaid
        ("review", "result_failure"),  # review waits for proof, our own status answer, or a person
        ("submitted", "status_not_found"),  # accepted: Safaricom may still pay it
        ("paid", "result_failure"),
        ("paid", "status_failed"),
        ("paid", "status_not_found"),
        ("paid", "mismatch"),
        ("failed", "result_failure"),
        ("failed", "mismatch"),  # flagged for review, but its money stays where it is
        ("pending", "escalate"),  # never sent (again) yet: nothing to find out
        ("reopened", "result_success"),  # only our own status answer settles a reopened payout
        ("reopened", "mismatch"),
        # "not found" may only mean M-Pesa is behind the success it sent: proof of payment wins,
        # the money stays in flight, and reconciliation lists the payout for a person
        ("reopened", "status_not_found"),
        ("reopened", "escalate"),
        ("submitting", "escalate"),
        ("paid", "accepted"),  # the result overtook the HTTP response
        ("failed", "accepted"),
    ],
)
def test_documented_no_ops(state: PayoutState, event: PayoutEvent) -> None:
    assert transition(state, event) == Transition(state, changed=False)


@pytest.mark.parametrize(("state", "event"), [("bogus", "claim"), ("pending", "bogus")])
def test_unknown_names_are_refused(state: str, event: str) -> None:
    with pytest.raises(ValueError, match="unknown payout"):
        transition(state, event)  # type: ignore[arg-type]


def replay(events: list[PayoutEvent], state: PayoutState = "pending") -> PayoutState:
    for event in events:
        state = transition(state, event).new_state
    return state


@pytest.mark.parametrize(
    ("story", "events", "ends"),
    [
        ("timeout callback, then success", ["claim", "accepted", "queue_timeout", "result_success", "queue_timeout"], "paid"),
        ("failure, then the real success", ["claim", "accepted", "result_failure", "result_success"], "paid"),
        ("success, then a failure", ["claim", "accepted", "result_success", "result_failure"], "paid"),
        ("forged failure, our status says paid", ["claim", "accepted", "result_failure", "status_paid"], "paid"),
        ("failure confirmed by our status query", ["claim", "accepted", "result_failure", "status_failed"], "failed"),
        ("failure confirmed, then a success: reopened, and our query says paid",
         ["claim", "accepted", "result_failure", "status_failed", "result_success", "status_paid"], "paid"),
        ("failure confirmed, then a forged success: reopened, and our query says failed again",
         ["claim", "accepted", "result_failure", "status_failed", "result_success", "status_failed"], "failed"),
        ("forged failure, M-Pesa not caught up: sent again", ["claim", "accepted", "result_failure", "status_not_found", "claim"],
         "submitting"),
        ("result before the HTTP answer", ["claim", "result_success", "accepted"], "paid"),
        ("mismatched success, then the real one", ["claim", "accepted", "mismatch", "result_success"], "paid"),
        ("ambiguous send, proven unsent, resent", ["claim", "ambiguous", "status_not_found", "claim", "accepted"], "submitted"),
    ],
)
def test_orders_of_arrival(story: str, events: list[PayoutEvent], ends: PayoutState) -> None:
    state: PayoutState = "pending"
    for event in events:
        try:
            state = transition(state, event).new_state
        except IllegalTransition:
            pass  # the sender lost its claim to a result: it changes nothing
    assert state == ends, story


def test_timeout_then_success_ends_paid() -> None:
    """docs/design.md §4: a B2C timeout callback, then the success result."""
    assert replay(["claim", "accepted", "queue_timeout", "result_success", "queue_timeout"]) == "paid"


def test_ambiguous_send_is_retried_only_after_a_status_query() -> None:
    state = replay(["claim", "ambiguous", "claim", "queue_timeout"])
    assert state == "unknown"
    assert transition(state, "status_not_found").new_state == "pending"


# --- an independent model -----------------------------------------------------------------------

HTTP = {"not_sent": "pending", "accepted": "submitted", "rejected": "failed", "ambiguous": "unknown"}


def model_next(state: str, event: str) -> str:
    """The rules of docs/design.md §3 again, written event first and without the implementation's
    table: the implementation must agree with it on every pair."""
    if state == "paid":
        return state
    if state == "failed":
        return {"status_paid": "paid", "result_success": "reopened"}.get(event, state)
    if state == "reopened":
        if event in HTTP:
            raise IllegalTransition(state, event)
        return {"status_paid": "paid", "status_failed": "failed"}.get(event, state)
    if event in ("result_success", "status_paid"):
        return "paid"
    if event == "claim":
        return "submitting" if state == "pending" else state
    if event == "withdraw":  # an operator's, for a payout never sent
        return "failed" if state == "pending" else state
    if event in HTTP:
        if state != "submitting":
            raise IllegalTransition(state, event)
        return HTTP[event]
    if event == "result_failure":
        return "failure_reported" if state in ("submitting", "submitted", "unknown") else state
    if event == "status_failed":
        return "failed" if state in ("submitted", "unknown", "failure_reported", "review") else state
    if event == "status_not_found":
        return "pending" if state in ("unknown", "review", "failure_reported") else state
    if event == "mismatch":  # a person must look; the money stays in flight
        return "review"
    if event == "escalate":
        return "review" if state in ("submitted", "unknown", "failure_reported") else state
    assert event == "queue_timeout", event
    return state


@pytest.mark.parametrize(("state", "event"), sorted((s, e) for s in STATES for e in EVENTS))
def test_the_implementation_agrees_with_the_model_on_every_pair(state: PayoutState, event: PayoutEvent) -> None:
    try:
        expected: str | type[IllegalTransition] = model_next(state, event)
    except IllegalTransition:
        expected = IllegalTransition
    try:
        got: str | type[IllegalTransition] = transition(state, event).new_state
    except IllegalTransition:
        got = IllegalTransition
    assert got == expected


@dataclass
class World:
    """M-Pesa's truth about one payout and the money of our books, driven by the state machine.

    ``mpesa_paid`` is what M-Pesa really did. Our own status answers tell the truth; B2C results
    may be forged, but a *matching* success (our ids, amount and receiver) is taken as proof, as the
    design says. The ledger moves money exactly as ``money.payouts.apply_event`` posts it."""

    mpesa_paid: bool
    state: PayoutState = "pending"
    ledger: dict[str, int] = field(default_factory=lambda: {"payable": 0, "in_flight": 100, "mpesa": 0})
    resent_without_proof: bool = False

    def apply(self, event: PayoutEvent) -> None:
        before = self.state
        try:
            self.state = transition(before, event).new_state
        except IllegalTransition:
            return
        if before == self.state:
            return
        if self.state == "paid":
            source = "payable" if before == "failed" else "in_flight"
            self.ledger[source] -= 100
            self.ledger["mpesa"] += 100
        elif self.state == "failed":
            self.ledger["in_flight"] -= 100
            self.ledger["payable"] += 100
        elif before == "failed":  # reopened: the money goes back in flight
            self.ledger["payable"] -= 100
            self.ledger["in_flight"] += 100
        if self.state == "pending" and before != "submitting" and event != "status_not_found":
            self.resent_without_proof = True


def events_consistent_with(mpesa_paid: bool) -> st.SearchStrategy[PayoutEvent]:
    """Any event may arrive, except answers to our own requests that would lie (a status answer
    saying failed, Daraja refusing outright a request M-Pesa then paid), and a proof of payment for a
    payment M-Pesa did not make (a forged success that matches our ids, amount and receiver cannot be
    told from a real one: out of scope). An operator withdraws only a payout never sent, which M-Pesa
    cannot have paid (``money.payouts.withdraw`` checks it). "Not found" may come for a paid payout: M-Pesa's status
    lags behind its payments."""
    lies = {"status_failed", "rejected", "withdraw"} if mpesa_paid else {"status_paid", "result_success"}
    return st.sampled_from(sorted(EVENTS - lies))


@settings(max_examples=500)
@given(st.booleans().flatmap(lambda paid: st.tuples(st.just(paid), st.lists(events_consistent_with(paid), max_size=40))))
def test_forged_failures_never_release_money_that_mpesa_paid(case: tuple[bool, list[PayoutEvent]]) -> None:
    mpesa_paid, events = case
    world = World(mpesa_paid)
    for event in events:
        world.apply(event)
        assert sum(world.ledger.values()) == 100  # the money is somewhere, once
        assert world.ledger["mpesa"] in (0, 100)  # booked as paid at most once
        assert (world.ledger["in_flight"] == 100) == (world.state in OPEN)
        assert (world.ledger["mpesa"] == 100) == (world.state == "paid")
        assert (world.ledger["payable"] == 100) == (world.state == "failed")
        assert not world.resent_without_proof, "a payout went back to be sent without proof it was never received"
        if mpesa_paid:  # the driver's money is never payable again while M-Pesa has paid it
            assert world.state != "failed"


@settings(max_examples=300)
@given(st.lists(events_consistent_with(True), max_size=30), st.sampled_from(["result_success", "status_paid"]))
def test_proof_of_payment_wins_whatever_came_before_or_after(
    before: list[PayoutEvent], proof: PayoutEvent
) -> None:
    world = World(mpesa_paid=True)
    for event in [*before, proof]:
        world.apply(event)
    assert world.state == "paid"
    for event in before:  # anything after it: still paid, still booked once
        world.apply(event)
    assert world.state == "paid" and world.ledger["mpesa"] == 100


@settings(max_examples=300)
@given(st.lists(st.sampled_from(sorted(EVENTS - {"status_paid"})), max_size=30))
def test_a_failed_payout_is_booked_paid_only_by_our_own_status_query(events: list[PayoutEvent]) -> None:
    """Once failed, callbacks alone never book a payment: a success reopens it (money back in
    flight, where it cannot be paid out again) until our own status query answers."""
    world = World(mpesa_paid=True)
    for event in ["claim", "accepted", "result_failure", "status_failed", *events]:
        world.apply(event)
        assert world.ledger["mpesa"] == 0
    assert world.state in ("failed", "reopened")  # nothing but our own status answer moves it on
    world.apply("status_paid")
    assert world.state == "paid" and world.ledger == {"payable": 0, "in_flight": 0, "mpesa": 100}


@settings(max_examples=300)
@given(st.lists(st.sampled_from(sorted(EVENTS - {"result_success", "status_paid"})), max_size=30))
def test_without_proof_of_payment_nothing_is_booked_as_paid(events: list[PayoutEvent]) -> None:
    world = World(mpesa_paid=False)
    for event in events:
        world.apply(event)
    assert world.state != "paid" and world.ledger["mpesa"] == 0


@settings(max_examples=300)
@given(st.sampled_from(sorted(STATES)))
def test_queue_timeout_never_changes_state(state: PayoutState) -> None:
    assert transition(state, "queue_timeout") == Transition(state, changed=False)


@pytest.mark.parametrize(
    ("outcome", "attempt", "event"),
    [
        ("accepted", 1, "accepted"), ("accepted", 3, "accepted"),
        ("rejected", 1, "rejected"),  # a first attempt refused outright: nothing was ever sent
        ("rejected", 2, "ambiguous"),  # a re-send refused says nothing of the first attempt
        ("ambiguous", 1, "ambiguous"), ("not_sent", 2, "not_sent"),
    ],
)
def test_what_an_answer_to_a_send_means(outcome: str, attempt: int, event: str) -> None:
    assert sending_event(outcome, attempt) == event


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["claim", "rejected", "not_sent", "ambiguous", "accepted", "status_not_found",
                                 "result_failure", "status_failed"]), max_size=30))
def test_a_refused_re_send_never_releases_the_money(events: list[str]) -> None:
    """Whatever the sends and answers, money goes back to payable only on a refusal of the first
    attempt or on our own status query's "failed"."""
    state: PayoutState = "pending"
    attempts = 0
    for name in events:
        event = name
        if name == "claim" and state == "pending":
            attempts += 1
        if name in ("accepted", "rejected", "ambiguous", "not_sent"):
            event = sending_event(name, attempts)
        try:
            moved = transition(state, event)  # type: ignore[arg-type]
        except IllegalTransition:
            continue
        if moved.new_state == "failed" and moved.changed:
            assert event == "status_failed" or (event == "rejected" and attempts == 1)
        state = moved.new_state
