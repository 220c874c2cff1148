"""``sweep_payouts()``: bring every open payout closer to a terminal state.

- ``pending`` (and not waiting for an approval) for ``payout_pending_after_s``: send it (its
  message was lost after the COMMIT, or it was proven unsent), unless its send message is failing
  (retrying or dead-lettered: ``workers.failures``);
- ``submitting`` for ``payout_submitting_stale_s``: its worker died between the claim and the
  answer, so nobody knows whether Daraja got it → ``unknown``;
- ``unknown`` or ``failure_reported`` (a failure result waiting for our confirmation), or
  ``submitted`` with no result for ``payout_submitted_stale_s``: ask Transaction Status
  (``check_payout_status``), each wait twice the one before (up to
  ``payout_status_backoff_max_s``); after ``payout_status_queries_max`` queries the payout goes to
  ``review`` (an operator looks; the alert is in docs/operations.md). ``review`` is never asked
  about automatically;
- one a person asked about (an approved ``payout_resolve``: ``status_check_wanted_at``), in any
  state still in doubt, ``review`` and past the query limit included: asked until Daraja takes a
  query, each wait half the time since the wish (at least ``payout_status_interval_s``, at most
  ``payout_status_backoff_max_s``). The message sent with the approval asks first; this is the backstop.

Idempotency: every step is itself idempotent (claim, state machine, harmless queries), so two
sweeps at once, or a sweep during normal work, change nothing twice.
"""

from __future__ import annotations

import dramatiq
import structlog
from sqlalchemy.orm import Session, sessionmaker

from db import payouts
from fleetpay.settings import Settings
from money.payouts import escalate, give_up_stale_claim
from workers import runtime
from workers.broker import NAMESPACE
from workers.check_payout_status import check_payout_status
from workers.failures import failing
from workers.messages import SWEEP_PAYOUTS
from workers.send_payout import send_payout

log = structlog.get_logger("fleetpay.payouts")


def advance_open_payouts(sessions: sessionmaker[Session], settings: Settings, *, age_s: int | None = None) -> dict[str, int]:
    """One sweep; ``age_s`` overrides every age threshold (tests)."""
    pending_s, submitting_s, submitted_s = (
        (age_s, age_s, age_s)
        if age_s is not None
        else (settings.payout_pending_after_s, settings.payout_submitting_stale_s, settings.payout_submitted_stale_s)
    )
    limit = settings.sweep_batch_max
    with sessions.begin() as session:
        pending = payouts.take_pending_due(session, older_than_s=pending_s, limit=limit)
    with sessions() as session:
        stale = payouts.stale_claims(session, older_than_s=submitting_s, limit=limit)
    for payout_id in stale:
        with sessions.begin() as session:
            give_up_stale_claim(session, payout_id)
    with sessions.begin() as session:
        to_check = payouts.take_status_checks_due(
            session, submitted_older_than_s=submitted_s, interval_s=settings.payout_status_interval_s,
            backoff_max_s=settings.payout_status_backoff_max_s, queries_max=settings.payout_status_queries_max,
            limit=limit,
        )
    with sessions() as session:
        exhausted = payouts.status_exhausted(
            session, queries_max=settings.payout_status_queries_max, interval_s=settings.payout_status_interval_s,
            submitted_older_than_s=submitted_s, limit=limit,
        )
    for payout_id, queries in exhausted:
        with sessions.begin() as session:
            escalate(session, payout_id, f"status_queries_exhausted:{queries}")
    held = failing(runtime.shared, NAMESPACE, "payout", pending)
    pending = [payout_id for payout_id in pending if payout_id not in held]
    for payout_id in pending:
        send_payout.send(payout_id)
    for payout_id in to_check:
        check_payout_status.send(payout_id)
    counts = {"resent": len(pending), "stale_claims": len(stale), "status_checks": len(to_check),
              "to_review": len(exhausted)}
    if any(counts.values()):
        log.info("payouts_swept", **counts)
    return counts


# A PostgreSQL blip must not dead-letter a sweep: a few quick retries (about 1, 2, 4 s), all over
# long before the scheduler's next sweep; a sweep is idempotent, so a retry overlapping it is harmless.
@dramatiq.actor(
    actor_name=SWEEP_PAYOUTS, queue_name=runtime.settings.payout_queue_name, max_retries=3, min_backoff=1_000, max_backoff=4_000
)
def sweep_payouts() -> None:
    advance_open_payouts(runtime.sessions(), runtime.settings)
