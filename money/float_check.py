"""The B2C float: M-Pesa's own word on the utility account that pays every payout.

An Account Balance query (``workers.check_float``) is answered by callback; an answer to a query we
sent is kept as a ``FloatObservation``, and one below ``float_low_cents`` is logged at error level
(the low-float alert reads ``fleetpay_mpesa_utility_available_cents``), so operators top up before
payouts start failing with ResultCode 1. Nothing here moves money.
"""

from __future__ import annotations

from typing import Any

import structlog
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import FloatObservation, FloatQuery, Inbox
from fleetpay.settings import Settings
from money.payments import Applied
from schemas.callbacks import parse_balance_result

log = structlog.get_logger("fleetpay.float")

UTILITY_ACCOUNT = "Utility Account"
ANSWER_CLOCK_SKEW = timedelta(minutes=5)
WORKING_ACCOUNT = "Working Account"


def record_float_query(session: Session, query_id: str) -> None:
    """Remember an Account Balance query we sent: only its answer is believed."""
    session.execute(pg_insert(FloatQuery).values(originator_conversation_id=query_id).on_conflict_do_nothing())


def balance_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    result = parse_balance_result(body)
    # Each query we sent is answered once: its id is used up by the first answer.
    ours = session.execute(
        delete(FloatQuery).where(FloatQuery.originator_conversation_id == result.originator_conversation_id)
        .returning(FloatQuery.originator_conversation_id)
    ).first()
    if ours is None:
        return Applied("rejected", "unknown_query")
    if result.result_code != 0:
        log.error("float_query_failed", code=str(result.result_code), description=result.result_desc)
        return Applied("processed", f"balance_error:{result.result_code}")
    utility_cents = result.available_cents.get(UTILITY_ACCOUNT)
    if utility_cents is None or result.completed_at is None:
        return Applied("processed", "balance_without_utility_account")
    if result.completed_at > row.received_at + ANSWER_CLOCK_SKEW:
        return Applied("processed", "balance_from_the_future")  # M-Pesa cannot answer before it is asked
    session.execute(
        pg_insert(FloatObservation)
        .values(inbox_id=row.id, observed_at=result.completed_at, utility_available_cents=utility_cents,
                working_available_cents=result.available_cents.get(WORKING_ACCOUNT))
        .on_conflict_do_nothing()
    )
    if utility_cents < settings.float_low_cents:
        log.error("float_low", utility_available_cents=utility_cents, float_low_cents=settings.float_low_cents)
    else:
        log.info("float_observed", utility_available_cents=utility_cents)
    return Applied("processed")


def balance_timeout(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    return Applied("processed", "balance_timeout")  # the next scheduled check asks again
