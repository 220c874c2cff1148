"""Apply one stored callback (an inbox row) to the books: the money path's unit of work.

``apply_callback`` locks the row, hands its body to the function for its kind, and marks the row
with the outcome, all in one transaction. Only a ``received`` row is applied, and every posting is
keyed (``c2b:<TransID>``), so a redelivered message, a sweeper re-enqueue or a second worker finds
the row done (or waits for the first worker's transaction) and changes nothing.

A body that cannot be applied (``InvalidCallback``) or a posting conflict marks the row
``rejected`` with its reason instead of being retried for days. Anything else (connection loss,
serialization failure, deadlock) propagates: the transaction rolls back and the caller retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from db import inbox, ledger
from db.ledger import PostingConflict
from db.models import Inbox
from fleetpay.settings import Settings
from money import float_check, notices, payout_results
from money.payments import Applied, apply_payment, payee_for_ref, payment_key
from schemas.callbacks import InvalidCallback, parse_c2b, parse_stk
from schemas.json_body import decode_json
from schemas.parsing import business_date, classify_account_ref

log = structlog.get_logger("fleetpay.worker")

Handler = Callable[[Session, Inbox, Any, Settings], Applied]


def c2b_confirmation(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    payment = parse_c2b(body, max_amount_cents=settings.amount_max_cents)
    structlog.contextvars.bind_contextvars(trans_id=payment.trans_id)
    ref = classify_account_ref(
        payment.bill_ref,
        vehicle_code_digits=settings.vehicle_code_digits,
        driver_code_pattern=settings.driver_code_pattern,
    )
    return apply_payment(
        session,
        key=payment_key(payment.trans_id),
        amount_cents=payment.amount_cents,
        business_date=business_date(payment.trans_time, close_time=settings.close_time, tz=settings.timezone),
        payee=payee_for_ref(session, ref),
        settings=settings,
        source_account=ledger.system_accounts(session).mpesa,
        inbox_id=row.id,
        vehicle_code=ref.code if ref.kind == "vehicle" else None,
    )


def stk_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """An STK push result is recorded, never posted. It carries no account reference, so it
    cannot say whose money it is; the paybill sends a C2B confirmation for the same receipt, which
    does (and Pull Transactions recovers that confirmation if it is lost). Posting from both
    would race: whichever came first would decide who is paid."""
    result = parse_stk(body)
    if result.result_code != 0:
        return Applied("processed", f"stk_failed:{result.result_code}")
    structlog.contextvars.bind_contextvars(trans_id=result.receipt)
    return Applied("processed", f"stk_paid:{result.receipt}:applied_by_c2b_confirmation")


def sms_delivery(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """An SMS delivery report: recorded on its notice; no money moves."""
    return Applied("processed", notices.record_delivery(session, body))


HANDLERS: Mapping[str, Handler] = {
    "c2b_confirmation": c2b_confirmation,
    "stk_result": stk_result,
    "b2c_result": payout_results.b2c_result,
    "b2c_timeout": payout_results.b2c_timeout,
    "status_result": payout_results.status_result,
    "status_timeout": payout_results.status_timeout,
    "balance_result": float_check.balance_result,
    "balance_timeout": float_check.balance_timeout,
    "sms_delivery": sms_delivery,
}


def apply_inbox_row(session: Session, inbox_id: int, settings: Settings) -> Applied | None:
    """Apply the row in the caller's transaction; None when there is nothing (left) to do."""
    row = inbox.lock_row(session, inbox_id)
    if row is None or row.status != "received":
        return None
    handler = HANDLERS.get(row.kind)
    if handler is None:
        applied = Applied("rejected", f"no_handler:{row.kind}")
    else:
        applied = handler(session, row, decode_json(row.body.encode()), settings)
    inbox.finish(session, inbox_id, applied.status, applied.reason, applied.about_payout)
    return replace(applied, notice_ids=notices.written(session))


def apply_callback(sessions: sessionmaker[Session], inbox_id: int, settings: Settings) -> Applied | None:
    """Apply one inbox row in a transaction of its own; a row that cannot be applied is marked
    ``rejected`` with its reason (in a second transaction, the first having rolled back).
    Returns what was done, or None when the row was already done."""
    try:
        with sessions.begin() as session:
            return apply_inbox_row(session, inbox_id, settings)
    except (InvalidCallback, PostingConflict) as problem:
        reason = problem.reason if isinstance(problem, InvalidCallback) else f"conflict:{problem.key}"
        log.error("callback_rejected", reason=reason)
        with sessions.begin() as session:
            row = inbox.lock_row(session, inbox_id)
            if row is not None and row.status == "received":
                inbox.finish(session, inbox_id, "rejected", reason)
        return Applied("rejected", reason)
