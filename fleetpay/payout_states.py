"""The payout state machine of docs/design.md §3, as a pure transition function.

Two kinds of event drive it:

- our own sender's: ``claim`` (take the payout to send it), then exactly one HTTP outcome:
  ``accepted``, ``rejected`` (a definite rejection), ``ambiguous`` (timeout, 5xx, reset) or
  ``not_sent`` (the request surely never left: connect error, no token; back to ``pending``);
- Safaricom's, which may come late, twice, or out of order (docs/daraja.md §4.6, §8.12):
  ``result_success``, ``result_failure``, ``queue_timeout``, ``status_paid``, ``status_not_found``.

Rules, in order:

1. Terminal states win: any event on ``paid`` or ``failed`` is a no-op (a late timeout never
   downgrades ``paid``; a duplicate result changes nothing).
2. Proof of payment always wins: ``result_success`` and ``status_paid`` lead to ``paid`` from every
   open state. docs/design.md draws them from submitting/submitted/unknown; they are also taken from
   ``pending`` (an attempt before a retry paid after all) and ``status_paid`` from ``submitting``,
   because ignoring a proof of payment is how a driver gets paid twice.
3. ``queue_timeout`` never changes anything: it is not a final failure; only a result or a status
   query settles the payout.
4. ``unknown`` goes back to ``pending`` only on ``status_not_found``: a new attempt is made only
   after a status query proved the first one did not pay.
5. Any other Safaricom event is a stale or duplicate message: a no-op (e.g. ``result_failure`` on
   ``pending``, whose previous attempt is already proven unpaid; ``status_not_found`` on
   ``submitted``, where Safaricom has accepted the request and may still pay it).
6. ``claim`` on an open state other than ``pending`` is a redelivered send message: a no-op, and
   ``changed=False`` tells the caller not to send.
7. An HTTP outcome on any open state but ``submitting`` means the sender lost track of its claim:
   `IllegalTransition`. (``unknown`` stays unknown even if a late HTTP answer turns up: only a
   result or a status query resolves it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

PayoutState = Literal["pending", "submitting", "submitted", "paid", "failed", "unknown"]
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
    "status_not_found",
]

# The one list of payout states, in the order they are usually met; the schema, the CLI and the
# balance queries all take theirs from here.
STATE_ORDER: tuple[PayoutState, ...] = get_args(PayoutState)
STATES: frozenset[PayoutState] = frozenset(STATE_ORDER)
EVENTS: frozenset[PayoutEvent] = frozenset(get_args(PayoutEvent))
TERMINAL: frozenset[PayoutState] = frozenset({"paid", "failed"})
OPEN: frozenset[PayoutState] = STATES - TERMINAL
_HTTP_OUTCOMES: frozenset[PayoutEvent] = frozenset({"not_sent", "accepted", "rejected", "ambiguous"})

_MOVES: Mapping[tuple[PayoutState, PayoutEvent], PayoutState] = {
    ("pending", "claim"): "submitting",
    ("submitting", "not_sent"): "pending",
    ("submitting", "accepted"): "submitted",
    ("submitting", "rejected"): "failed",
    ("submitting", "ambiguous"): "unknown",
    ("submitting", "result_failure"): "failed",
    ("submitted", "result_failure"): "failed",
    ("unknown", "result_failure"): "failed",
    ("unknown", "status_not_found"): "pending",
    **{(state, "result_success"): "paid" for state in OPEN},
    **{(state, "status_paid"): "paid" for state in OPEN},
}


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
    if state in TERMINAL:
        return Transition(state, changed=False)
    new_state = _MOVES.get((state, event))
    if new_state is not None:
        return Transition(new_state, changed=True)
    if event in _HTTP_OUTCOMES:
        raise IllegalTransition(state, event)
    return Transition(state, changed=False)
