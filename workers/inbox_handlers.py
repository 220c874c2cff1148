"""What each kind of inbox row means to the books. One function per kind, called by
``process_callback`` inside its transaction with the row locked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from sqlalchemy.orm import Session

from db import ledger
from db.models import Inbox
from fleetpay.settings import Settings
from schemas.callbacks import parse_c2b, parse_stk
from schemas.parsing import business_date, classify_account_ref
from workers import payout_results
from workers.apply_payment import Applied, apply_payment, payee_for_ref, payment_key

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


HANDLERS: Mapping[str, Handler] = {
    "c2b_confirmation": c2b_confirmation,
    "stk_result": stk_result,
    "b2c_result": payout_results.b2c_result,
    "b2c_timeout": payout_results.b2c_timeout,
    "status_result": payout_results.status_result,
    "status_timeout": payout_results.status_timeout,
}
