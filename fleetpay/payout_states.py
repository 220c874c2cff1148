"""The payout state machine of docs/design.md §3, as a pure transition function.

Three kinds of event drive it:

- our own sender's: ``claim`` (take the payout to send it), then exactly one HTTP outcome:
  ``accepted``, ``rejected`` (a definite rejection: M-Pesa never took the request), ``ambiguous``
  (timeout, 5xx, reset) or ``not_sent`` (the request surely never left: back to ``pending``);
- Safaricom's results, which may come late, twice, out of order or forged (docs/daraja.md §4.6,
  §8.12), each already matched against what we asked (``money.payout_results``):
  ``result_success`` (a B2C success naming our ids, amount and receiver), ``result_failure``,
  ``queue_timeout``;
- the answers to Transaction Status queries *we* sent about this payout: ``status_paid``,
  ``status_failed``, ``status_not_found``; and ``mismatch``: a result or status answer that names
  the payout but does not match what we asked (another amount or receiver); and ``escalate``: we
  cannot find out by ourselves (our status queries are refused, or ran out);
- an operator's: ``withdraw`` (a payout held for approval and never sent, e.g. the deposit refund
  of a driver who is reinstated, is not to be paid after all).

Rules, in order:

1. Proof of payment wins: ``result_success`` and ``status_paid`` lead to ``paid`` from every open
   state but ``reopened``. From ``failed`` (its money already payable again) only our own
   ``status_paid`` does; a matching success *callback* about a failed payout makes it
   ``reopened``: its money goes back in flight (so it cannot be paid out again meanwhile), and only
   our own status answer settles it (``status_paid`` → paid, ``status_failed`` → failed).
2. ``paid`` absorbs every other event; ``failed`` every event but ``status_paid`` and
   ``result_success``.
3. A failure result is never final by itself: it makes the payout ``failure_reported``, and only
   the answer to a status query we made (``status_failed``) makes it ``failed`` and its money
   payable again. A forged failure therefore costs one status query.
4. ``status_not_found`` (our query: M-Pesa does not know the request) sends an ``unknown``,
   ``failure_reported`` or ``review`` payout back to ``pending``: it is sent again with the *same*
   OriginatorConversationID, so if M-Pesa merely had not caught up, Daraja refuses the duplicate.
5. ``mismatch`` moves an open payout to ``review`` (money stays in flight; an operator looks);
   ``escalate`` does so only for a payout waiting for a status answer (``submitted``, ``unknown``,
   ``failure_reported``): we cannot find out by ourselves. Neither moves money. ``review`` is left by a proof of payment, by our own status answer, or not at
   all: it is not asked about automatically.
6. ``queue_timeout`` never changes anything (docs/daraja.md §4.4).
7. Any other Safaricom event is stale or a duplicate: a no-op (e.g. ``result_failure`` on
   ``pending``, whose attempt is already proven unsent; ``status_not_found`` on ``submitted``, which
   Safaricom accepted and may still pay).
8. ``claim`` on an open state other than ``pending`` is a redelivered send message: a no-op, and
   ``changed=False`` tells the caller not to send.
9. ``withdraw`` makes a ``pending`` payout ``failed`` (its money payable again); every other state
   ignores it. ``money.payouts.withdraw`` allows it only for a payout held for approval that was
   never sent (no attempt), which M-Pesa cannot have paid.
10. An HTTP outcome on an open state other than ``submitting`` means the sender lost its claim (a
   result overtook the HTTP answer, or a sweep judged the claim stale): `IllegalTransition`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

PayoutState = Literal[
    "pending", "submitting", "submitted", "unknown", "failure_reported", "review", "reopened", "paid", "failed"
]
PayoutEvent = Literal[
    "claim",
    "not_sent",
    "accepted",
    "rejected",
    "ambiguous",
    "result_success",
    "result_failure",
    "queue_timeout",
    "status_paid",
    "status_failed",
    "status_not_found",
    "mismatch",
    "escalate",
    "withdraw",
]

# The one list of payout states, in the order they are usually met; the schema, the CLI and the
# balance queries all take theirs from here.
STATE_ORDER: tuple[PayoutState, ...] = get_args(PayoutState)
STATES: frozenset[PayoutState] = frozenset(STATE_ORDER)
EVENTS: frozenset[PayoutEvent] = frozenset(get_args(PayoutEvent))
# Settled: the payout's money has left ``payouts_in_flight`` (to M-Pesa, or back to payable).
TERMINAL: frozenset[PayoutState] = frozenset({"paid", "failed"})
# Open: its money is in flight.
OPEN: frozenset[PayoutState] = STATES - TERMINAL
PROOF_OF_PAYMENT: frozenset[PayoutEvent] = frozenset({"result_success", "status_paid"})
# Asked about by the payout sweep as soon as they are due (``submitted`` too, once stale).
ASKED_ABOUT: tuple[PayoutState, ...] = ("unknown", "failure_reported", "reopened")
# May be asked about at all: the status actor refuses the rest.
QUERYABLE: tuple[PayoutState, ...] = ("submitted", "unknown", "failure_reported", "review", "reopened", "failed")
# What a person may ask about (``payout_resolve``): a failed payout is settled.
RESOLVABLE_STATES: tuple[PayoutState, ...] = tuple(state for state in QUERYABLE if state != "failed")
_HTTP_OUTCOMES: frozenset[PayoutEvent] = frozenset({"not_sent", "accepted", "rejected", "ambiguous"})

_MOVES: Mapping[tuple[PayoutState, PayoutEvent], PayoutState] = {
    ("pending", "claim"): "submitting",
    ("submitting", "not_sent"): "pending",
    ("submitting", "accepted"): "submitted",
    ("submitting", "rejected"): "failed",
    ("submitting", "ambiguous"): "unknown",
    **{(state, "result_failure"): "failure_reported" for state in ("submitting", "submitted", "unknown")},
    **{(state, "status_failed"): "failed" for state in ("submitted", "unknown", "failure_reported", "review")},
    **{(state, "status_not_found"): "pending" for state in ("unknown", "failure_reported", "review")},
    **{(state, "mismatch"): "review" for state in OPEN - {"review", "reopened"}},
    **{(state, "escalate"): "review" for state in ("submitted", "unknown", "failure_reported")},
    ("failed", "result_success"): "reopened",
    **{(state, event): "paid" for state in OPEN - {"reopened"} for event in PROOF_OF_PAYMENT},
    ("reopened", "status_paid"): "paid",
    ("reopened", "status_failed"): "failed",
    ("failed", "status_paid"): "paid",
    ("pending", "withdraw"): "failed",
}


# What our own sender's HTTP outcome (``workers.daraja.outcomes.Outcome``) means for the payout.
_EVENT_BY_OUTCOME: Mapping[str, PayoutEvent] = {
    "accepted": "accepted", "rejected": "rejected", "ambiguous": "ambiguous", "not_sent": "not_sent",
}


def sending_event(outcome: str, attempt: int) -> PayoutEvent:
    """The event of Daraja's answer to the ``attempt``-th send of a payout. A refusal of a re-send
    is ``ambiguous``: the gateway refuses some requests (e.g. ``401.003.01``) before its duplicate
    check, so it says nothing of the earlier attempt, which only a status query may settle."""
    event = _EVENT_BY_OUTCOME[outcome]
    return "ambiguous" if event == "rejected" and attempt > 1 else event


class IllegalTransition(ValueError):
    """An event that cannot happen in this state unless the caller has a bug."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"payout event {event!r} is illegal in state {state!r}")
        self.state = state
        self.event = event


@dataclass(frozen=True)
class Transition:
    """The state after an event; ``changed`` is False for a no-op (nothing to write or send)."""

    new_state: PayoutState
    changed: bool


def transition(state: PayoutState, event: PayoutEvent) -> Transition:
    """Apply ``event`` to a payout in ``state`` (the rules are in the module docstring)."""
    if state not in STATES or event not in EVENTS:
        raise ValueError(f"unknown payout state {state!r} or event {event!r}")
    new_state = _MOVES.get((state, event))
    if new_state is not None:
        return Transition(new_state, changed=True)
    if event in _HTTP_OUTCOMES and state in OPEN and state != "submitting":
        raise IllegalTransition(state, event)
    return Transition(state, changed=False)
