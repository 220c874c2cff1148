"""What Safaricom tells us about payouts: B2C results, queue timeouts and status results.

Called by ``money.callbacks`` for inbox rows of kinds ``b2c_result``, ``b2c_timeout``,
``status_result`` and ``status_timeout``. Results are keyed by our own OriginatorConversationID,
so a result that arrives before the HTTP answer was recorded is handled like any other; terminal
states win, and duplicate or late callbacks change nothing (``fleetpay.payout_states``).
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Inbox, Payout, PayoutStatusQuery
from db.payouts import payout_by_originator_id
from fleetpay.payout_states import Transition
from fleetpay.settings import Settings
from money.payments import Applied
from money.payouts import apply_event
from schemas.callbacks import parse_b2c_result, parse_status_result

log = structlog.get_logger("fleetpay.payouts")


def _settled(moved: Transition, payout: Payout) -> Applied:
    if moved.new_state == "pending":  # proven unpaid: send it again (same OriginatorConversationID)
        return Applied("processed", "resend", payout_ids=(payout.id,))
    return Applied("processed", None if moved.changed else f"no_change:{moved.new_state}")


def b2c_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    result = parse_b2c_result(body)
    payout = payout_by_originator_id(session, result.originator_conversation_id)
    if payout is None:
        return Applied("rejected", "unknown_payout")  # not ours: forged, or another system's
    with structlog.contextvars.bound_contextvars(payout_id=payout.id):
        if result.result_code == 0:
            if result.amount_cents is not None and result.amount_cents != payout.amount_cents:
                log.error("payout_result_amount_mismatch", expected=payout.amount_cents, got=result.amount_cents)
                return Applied("rejected", f"amount_mismatch:{result.amount_cents}")
            moved = apply_event(
                session, payout.id, "result_success", conversation_id=result.conversation_id,
                receipt=result.receipt, result_code="0", result_desc=result.result_desc,
            )
        else:
            moved = apply_event(
                session, payout.id, "result_failure", conversation_id=result.conversation_id,
                result_code=str(result.result_code), result_desc=result.result_desc,
            )
        log.info("payout_result", code=str(result.result_code), state=moved.new_state, changed=moved.changed)
        return _settled(moved, payout)


def b2c_timeout(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """A queue timeout is not a failure (docs/daraja.md §4.4): the payout waits for its result or a
    status query. It is recorded, and changes nothing."""
    result = parse_b2c_result(body)
    payout = payout_by_originator_id(session, result.originator_conversation_id)
    if payout is None:
        return Applied("rejected", "unknown_payout")
    return Applied("processed", f"queue_timeout:{payout.state}")


def status_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    result = parse_status_result(body)
    payout = None
    if result.original_originator_conversation_id:
        payout = payout_by_originator_id(session, result.original_originator_conversation_id)
    if payout is None:  # "not found" answers name only the query
        payout = session.execute(
            select(Payout)
            .join(PayoutStatusQuery, PayoutStatusQuery.payout_id == Payout.id)
            .where(PayoutStatusQuery.originator_conversation_id == result.originator_conversation_id)
        ).scalar_one_or_none()
    if payout is None:
        return Applied("rejected", "unknown_payout")
    code = str(result.result_code)
    status = (result.transaction_status or "").lower()
    with structlog.contextvars.bound_contextvars(payout_id=payout.id):
        if code == "0" and status == "completed":
            moved = apply_event(session, payout.id, "status_paid", receipt=result.receipt, result_code=code)
        elif code == "0" and status in ("declined", "cancelled", "expired", "failed"):
            moved = apply_event(session, payout.id, "result_failure", result_code=code, result_desc=result.transaction_status)
        elif code in settings.daraja_status_not_found_codes:
            moved = apply_event(session, payout.id, "status_not_found", result_code=code, result_desc=result.result_desc)
        else:
            # Neither proof of payment nor proof of absence: an operator must look.
            log.warning("payout_status_undecided", code=code, status=status)
            return Applied("processed", f"status_undecided:{code}:{status}")
        log.info("payout_status", code=code, status=status, state=moved.new_state, changed=moved.changed)
        return _settled(moved, payout)


def status_timeout(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    return Applied("processed", "status_timeout")  # the next payout sweep asks again
