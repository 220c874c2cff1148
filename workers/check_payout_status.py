"""``check_payout_status(payout_id)``: ask Daraja's Transaction Status what became of a payout.

Idempotency: asking is harmless; the answer arrives at ``status/result`` and moves the payout
only by ``fleetpay.payout_states`` (paid wins; "not found" sends an ``unknown`` payout again with
the same OriginatorConversationID). ``sweep_payouts`` spaces the queries by
``payout_status_interval_s``; a person's approved ``payout_resolve`` request (``fleetpay payouts
resolve``, the console's payout page) asks at once, the sweep backing it up.
"""

from __future__ import annotations

import dramatiq
import structlog
from sqlalchemy.orm import Session, sessionmaker

from money.payouts import record_status_query, status_query_refused, take_status_check
from workers import runtime
from workers.daraja.client import DarajaClient, DarajaError
from workers.daraja.outcomes import Outcome
from workers.messages import CHECK_PAYOUT_STATUS

log = structlog.get_logger("fleetpay.payouts")


def ask_payout_status(sessions: sessionmaker[Session], daraja: DarajaClient, payout_id: int) -> str | None:
    """Send one Transaction Status query about a payout whose outcome is in doubt; the query's id,
    or None when nothing was asked (settled meanwhile, or Daraja did not take the query)."""
    with structlog.contextvars.bound_contextvars(payout_id=payout_id):
        with sessions.begin() as session:
            occ = take_status_check(session, payout_id)
        if occ is None:
            return None
        try:
            answer = daraja.transaction_status(originator_conversation_id=occ)
        except DarajaError as error:
            log.warning("payout_status_not_asked", error=str(error))
            return None
        if answer.outcome is Outcome.REJECTED:  # a definite refusal: asking again cannot help
            log.error("payout_status_query_refused", code=answer.code, description=answer.description)
            with sessions.begin() as session:
                status_query_refused(session, payout_id, str(answer.code))
            return None
        if answer.outcome is not Outcome.ACCEPTED or not answer.originator_conversation_id:
            log.warning("payout_status_not_taken", outcome=answer.outcome, code=answer.code)
            return None
        with sessions.begin() as session:
            record_status_query(session, payout_id, answer.originator_conversation_id)
        log.info("payout_status_asked", query=answer.originator_conversation_id)
        return answer.originator_conversation_id


@dramatiq.actor(actor_name=CHECK_PAYOUT_STATUS, queue_name=runtime.settings.payout_queue_name, **runtime.RETRY_OPTIONS)
def check_payout_status(payout_id: int) -> None:
    ask_payout_status(runtime.sessions(), runtime.daraja(), payout_id)
