"""``send_payout(payout_id)``: send one B2C payment for a payout.

Idempotency: the payout is claimed by a conditional UPDATE (``pending → submitting``) before
anything is sent, so a redelivered message, a sweeper re-send or a second worker finds it claimed
and sends nothing. The request carries the payout's own OriginatorConversationID, the same on every
attempt, so Daraja refuses a true duplicate as well (``500.002.1001``).

What the answer means is ``workers.daraja.outcomes``: accepted → ``submitted``; a definite rejection
→ ``failed`` (the money returns to ``payable``); anything ambiguous → ``unknown``, which only a
Transaction Status query resolves; surely not sent → ``pending`` again. A worker that dies between
the claim and the answer leaves ``submitting``, which ``sweep_payouts`` turns into ``unknown``.
"""

from __future__ import annotations

import dramatiq
import structlog

from fleetpay.payout_states import IllegalTransition, sending_event
from money.payouts import apply_event, claim, record_conversation_id
from workers import runtime
from workers.daraja.client import DarajaError
from workers.daraja.outcomes import Answer, Outcome
from workers.messages import SEND_PAYOUT

log = structlog.get_logger("fleetpay.payouts")



@dramatiq.actor(actor_name=SEND_PAYOUT, queue_name=runtime.settings.payout_queue_name, **runtime.RETRY_OPTIONS)
def send_payout(payout_id: int) -> None:
    with structlog.contextvars.bound_contextvars(payout_id=payout_id):
        sessions = runtime.sessions()
        with sessions.begin() as session:
            payout = claim(session, payout_id)
        if payout is None:
            log.info("payout_not_pending")
            return
        try:
            if payout.amount_cents > runtime.settings.b2c_maximum_cents:
                # Made before a lower maximum: refused here, never sent (its money returns to
                # payable, and goes out again split).
                answer = Answer(Outcome.REJECTED, "above_b2c_maximum", f"more than {runtime.settings.b2c_maximum_cents} cents")
            else:
                answer = runtime.daraja().b2c_payment(
                    originator_conversation_id=payout.originator_conversation_id,
                    msisdn=payout.msisdn,
                    amount_cents=payout.amount_cents,
                    remarks=f"fleetpay payout {payout.id}",
                )
        except DarajaError as error:  # no token or no certificate: nothing left this process
            answer = Answer(Outcome.NOT_SENT, description=str(error))
        log.info("payout_sent", outcome=answer.outcome, code=answer.code, cause=payout.cause_key,
                 originator_conversation_id=payout.originator_conversation_id)
        with sessions.begin() as session:
            if answer.conversation_id:  # kept even if the claim was lost: results are matched by it
                record_conversation_id(session, payout_id, answer.conversation_id)
            try:
                with session.begin_nested():
                    apply_event(session, payout_id, sending_event(answer.outcome, payout.attempts),
                                result_code=answer.code, result_desc=answer.description)
            except IllegalTransition as error:
                # The claim was lost meanwhile (a result overtook this answer, or the sweeper
                # judged the claim stale): the late answer changes nothing.
                log.warning("payout_answer_after_claim_lost", error=str(error))


def send_payouts(payout_ids: list[int] | tuple[int, ...]) -> bool:
    """Enqueue payouts already committed; False when the broker did not take them (the payout sweep
    sends them later, so nothing is lost)."""
    try:
        for payout_id in payout_ids:
            send_payout.send(payout_id)
    except Exception as error:  # noqa: BLE001 — committed: sweep_payouts sends them
        log.warning("payouts_not_enqueued_sweep_will_send", error=str(error), payout_ids=list(payout_ids))
        return False
    return True
