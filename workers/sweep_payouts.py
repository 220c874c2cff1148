"""``sweep_payouts()``: bring every open payout closer to a terminal state.

- ``pending`` (and not waiting for an approval) for ``payout_pending_after_s``: send it (its
  message was lost after the COMMIT, or it was proven unsent);
- ``submitting`` for ``payout_submitting_stale_s``: its worker died between the claim and the
  answer, so nobody knows whether Daraja got it → ``unknown``;
- ``unknown``, or ``submitted`` with no result for ``payout_submitted_stale_s``: ask Transaction
  Status (``check_payout_status``).

Idempotency: every step is itself idempotent (claim, state machine, harmless queries), so two
sweeps at once, or a sweep during normal work, change nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import structlog
from sqlalchemy import and_, func, or_, select, update

from db.models import Inbox, Payout
from db.payouts import apply_event
from fleetpay.payout_states import IllegalTransition
from workers import runtime
from workers.check_payout_status import check_payout_status
from workers.send_payout import send_payout

log = structlog.get_logger("fleetpay.payouts")


def _older_than(seconds: int):  # type: ignore[no-untyped-def]
    return Payout.updated_at < func.now() - timedelta(seconds=seconds)


def sweep(*, age_s: int | None = None) -> dict[str, int]:
    """One sweep; ``age_s`` overrides every age threshold (``fleetpay payouts sweep``, tests)."""
    settings = runtime.settings
    pending_s, submitting_s, submitted_s = (
        (age_s, age_s, age_s)
        if age_s is not None
        else (settings.payout_pending_after_s, settings.payout_submitting_stale_s, settings.payout_submitted_stale_s)
    )
    limit = settings.sweep_batch_max
    sessions = runtime.sessions()
    with sessions.begin() as session:
        # Re-sent at most once per pending_s: the resend moves updated_at.
        due = (
            select(Payout.id)
            .where(Payout.state == "pending", Payout.requires_approval.is_(False), _older_than(pending_s))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        pending = session.execute(
            update(Payout).where(Payout.id.in_(due.scalar_subquery())).values(updated_at=func.now()).returning(Payout.id)
        ).scalars().all()
    with sessions() as session:
        stale = session.execute(
            select(Payout.id).where(Payout.state == "submitting", _older_than(submitting_s)).limit(limit)
        ).scalars().all()
    for payout_id in stale:
        try:
            with sessions.begin() as session:
                apply_event(session, payout_id, "ambiguous", result_desc="claim went stale: worker lost")
        except IllegalTransition:
            pass  # answered meanwhile
    with sessions.begin() as session:
        # The right to ask is taken here (stamped), so a slow queue never holds two checks of a
        # payout: at most one status query per payout_status_interval_s.
        due = (
            select(Payout.id)
            .where(
                or_(Payout.state == "unknown", and_(Payout.state == "submitted", _older_than(submitted_s))),
                or_(
                    Payout.status_checked_at.is_(None),
                    Payout.status_checked_at < func.now() - timedelta(seconds=settings.payout_status_interval_s),
                ),
                # Its result has arrived and waits for a worker: asking again would only add work.
                ~select(Inbox.id)
                .where(Inbox.kind == "b2c_result", Inbox.external_id == Payout.originator_conversation_id,
                       Inbox.status == "received")
                .exists(),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        to_check = session.execute(
            update(Payout).where(Payout.id.in_(due.scalar_subquery())).values(status_checked_at=func.now()).returning(Payout.id)
        ).scalars().all()
    for payout_id in pending:
        send_payout.send(payout_id)
    for payout_id in to_check:
        check_payout_status.send(payout_id)
    counts = {"resent": len(pending), "stale_claims": len(stale), "status_checks": len(to_check)}
    if any(counts.values()):
        log.info("payouts_swept", **counts)
    return counts


@dramatiq.actor(queue_name=runtime.settings.payout_queue_name, max_retries=0)
def sweep_payouts() -> None:
    sweep()
