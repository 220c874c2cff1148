"""``check_payout_status(payout_id)``: ask Daraja's Transaction Status what became of a payout.

Idempotency: asking is harmless; the answer arrives at ``status/result`` and moves the payout
only by ``fleetpay.payout_states`` (paid wins; "not found" sends an ``unknown`` payout again with
the same OriginatorConversationID). ``sweep_payouts`` spaces the queries by
``payout_status_interval_s``; an operator's ``fleetpay payouts resolve`` asks at once.
"""

from __future__ import annotations

import dramatiq
import structlog
from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from db.models import Payout, PayoutStatusQuery
from workers import runtime
from workers.daraja.client import DarajaError
from workers.daraja.outcomes import Outcome

log = structlog.get_logger("fleetpay.payouts")


@dramatiq.actor(queue_name=runtime.settings.payout_queue_name, **runtime.RETRY_OPTIONS)
def check_payout_status(payout_id: int) -> None:
    with structlog.contextvars.bound_contextvars(payout_id=payout_id):
        with runtime.sessions().begin() as session:
            occ = session.execute(
                update(Payout)
                .where(Payout.id == payout_id, Payout.state.in_(("submitted", "unknown")))
                .values(status_checked_at=func.now())
                .returning(Payout.originator_conversation_id)
            ).scalar_one_or_none()
        if occ is None:
            return
        try:
            answer = runtime.daraja().transaction_status(originator_conversation_id=occ)
        except DarajaError as error:
            log.warning("payout_status_not_asked", error=str(error))
            return
        if answer.outcome is not Outcome.ACCEPTED or not answer.originator_conversation_id:
            log.warning("payout_status_query_refused", outcome=answer.outcome, code=answer.code)
            return
        with runtime.sessions().begin() as session:
            session.execute(
                pg_insert(PayoutStatusQuery)
                .values(originator_conversation_id=answer.originator_conversation_id, payout_id=payout_id)
                .on_conflict_do_nothing()
            )
        log.info("payout_status_asked", query=answer.originator_conversation_id)
