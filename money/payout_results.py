"""What Safaricom tells us about payouts: B2C results, queue timeouts and status results.

Called by ``money.callbacks`` for inbox rows of kinds ``b2c_result``, ``b2c_timeout``,
``status_result`` and ``status_timeout``. Every distinct body is its own inbox row (the ingest keys
results by id and body digest), so a failure followed by the real success is seen in full. Each
result is judged against what we asked (``money.result_matching``) and only then moves the payout,
by ``fleetpay.payout_states``: proof of payment wins, a failure waits for our own status query,
anything that does not match sends the payout to review. The inbox row that moved a payout is kept
on it as the evidence (``settled_by_inbox_id``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Inbox, Payout, PayoutStatusQuery
from db.payouts import payout_by_originator_id
from fleetpay.settings import Settings
from money.payments import Applied
from money.payouts import apply_event, flag
from money.result_matching import Asked, Verdict, judge_b2c_result, judge_status_result, resend_or_review
from schemas.callbacks import parse_b2c_result, parse_status_result

log = structlog.get_logger("fleetpay.payouts")

# A status answer can overtake the recording of its query's id (the HTTP answer to our query and
# the result travel separately): an unknown query id is believed forged only after this long.
STATUS_QUERY_RECORDING_GRACE = timedelta(seconds=60)


class TryLater(Exception):
    """The row cannot be judged yet (its query's id may still be being recorded): apply it later."""


def asked(payout: Payout, settings: Settings) -> Asked:
    return Asked(
        originator_conversation_id=payout.originator_conversation_id,
        conversation_id=payout.conversation_id,
        amount_cents=payout.amount_cents,
        msisdn=payout.msisdn,
        short_code=settings.daraja_app("b2c").short_code,
    )


def _apply(session: Session, row: Inbox, payout: Payout, verdict: Verdict, **evidence: Any) -> Applied:
    """Move ``payout`` as ``verdict`` says; the row's status says what happened, for the record."""
    with structlog.contextvars.bound_contextvars(payout_id=payout.id):
        # The row is the payout's evidence, whatever it names (``db.payouts.payout_detail``).
        return replace(_move(session, row, payout, verdict, **evidence), about_payout=payout.id)


def _move(session: Session, row: Inbox, payout: Payout, verdict: Verdict, **evidence: Any) -> Applied:
    """What ``_apply`` does to the payout."""
    review_reason = verdict.reason if verdict.review else None
    if verdict.event is None:
        if review_reason:
            flag(session, payout.id, review_reason)
            return Applied("processed", f"review:{review_reason}")
        log.warning("payout_result_undecided", reason=verdict.reason)
        return Applied("processed", verdict.reason)
    moved = apply_event(session, payout.id, verdict.event, evidence_inbox_id=row.id,
                        review_reason=review_reason, **evidence)
    log.info("payout_result", kind=row.kind, payout_event=verdict.event, reason=verdict.reason,
             state=moved.new_state, changed=moved.changed)
    if moved.new_state == "reopened" and moved.changed:
        # A success callback about a payout our own status query had found failed: its money is
        # back in flight, and only our own query may book it. Ask.
        return Applied("processed", "success_after_failure:status_asked", status_checks=(payout.id,))
    if moved.new_state == "pending" and moved.changed:  # proven unsent: send again, same OriginatorConversationID
        return Applied("processed", "resend", payout_ids=(payout.id,))
    if review_reason:
        return Applied("processed", f"review:{review_reason}")
    return Applied("processed", None if moved.changed else f"no_change:{moved.new_state}")


def b2c_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    result = parse_b2c_result(body)
    payout = payout_by_originator_id(session, result.originator_conversation_id)
    if payout is None:
        return Applied("rejected", "unknown_payout")  # not ours: forged, or another system's
    if payout.attempts == 0:
        # Never sent (held for approval, or withdrawn): no result can be about it. It was forged
        # by someone who knows its id; it moves nothing, and a person looks.
        return _apply(session, row, payout, Verdict(None, "result_for_a_payout_never_sent", review=True))
    verdict = judge_b2c_result(result, asked(payout, settings))
    evidence: dict[str, Any] = {}
    if verdict.event in ("result_success", "result_failure"):
        evidence = {"receipt": result.receipt, "result_code": str(result.result_code), "result_desc": result.result_desc}
    return _apply(session, row, payout, verdict, **evidence)


def b2c_timeout(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """A queue timeout is not a failure (docs/daraja.md §4.4): the payout waits for its result or a
    status query. It is recorded, and changes nothing."""
    result = parse_b2c_result(body)
    payout = payout_by_originator_id(session, result.originator_conversation_id)
    if payout is None:
        return Applied("rejected", "unknown_payout")
    return Applied("processed", f"queue_timeout:{payout.state}", about_payout=payout.id)


def status_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """A Transaction Status answer counts only for a query we sent, about that payout; one that
    names a payout without being ours moves nothing and flags that payout."""
    result = parse_status_result(body)
    payout = session.execute(
        select(Payout)
        .join(PayoutStatusQuery, PayoutStatusQuery.payout_id == Payout.id)
        .where(PayoutStatusQuery.originator_conversation_id == result.originator_conversation_id)
    ).scalar_one_or_none()
    query_is_ours = payout is not None
    if payout is None and result.original_originator_conversation_id:
        payout = payout_by_originator_id(session, result.original_originator_conversation_id)
        if payout is not None and _may_still_be_recording(session, row, payout):
            raise TryLater(f"status query {result.originator_conversation_id} not recorded yet")
    if payout is None:
        return Applied("rejected", "unknown_query")
    verdict = judge_status_result(
        result, asked(payout, settings), query_is_ours=query_is_ours,
        not_found_codes=settings.daraja_status_not_found_codes, error_codes=settings.daraja_status_error_codes,
    )
    verdict = resend_or_review(verdict, sends=payout.attempts, sends_max=settings.payout_sends_max)
    evidence: dict[str, Any] = {}
    if verdict.event in ("status_paid", "status_failed", "status_not_found"):
        evidence = {"status_result_code": str(result.result_code), "result_desc": result.transaction_status or result.result_desc}
        if verdict.event == "status_paid":
            evidence["receipt"] = result.receipt
    return _apply(session, row, payout, verdict, **evidence)


def _may_still_be_recording(session: Session, row: Inbox, payout: Payout) -> bool:
    """We asked about this payout lately, and this answer is young: its query's id may not be
    recorded yet (``workers.check_payout_status`` records it after Daraja's HTTP answer)."""
    young = session.execute(select(func.now() - row.received_at)).scalar_one() < STATUS_QUERY_RECORDING_GRACE
    return young and payout.status_checked_at is not None


def status_timeout(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    return Applied("processed", "status_timeout")  # the next payout sweep asks again
