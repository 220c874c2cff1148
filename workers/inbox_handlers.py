"""What each kind of inbox row means to the books. One function per kind, called by
``process_callback`` inside its transaction with the row locked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from sqlalchemy.orm import Session

from db import fleet, ledger
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
    """An STK push result. It carries no account reference, so a successful one is attributed to
    the driver whose M-Pesa number paid (a driver paying the company), else to suspense. The
    paybill also sends a C2B confirmation for the same receipt; the shared key counts it once."""
    result = parse_stk(body)
    if result.result_code != 0:
        return Applied("processed", f"stk_failed:{result.result_code}")
    assert result.receipt and result.amount_cents and result.paid_at, "parse_stk checks success fields"
    structlog.contextvars.bind_contextvars(trans_id=result.receipt)
    payee = fleet.payee_for_msisdn(session, result.phone) if result.phone else None
    return apply_payment(
        session,
        key=payment_key(result.receipt),
        amount_cents=result.amount_cents,
        business_date=business_date(result.paid_at, close_time=settings.close_time, tz=settings.timezone),
        payee=payee,
        settings=settings,
        source_account=ledger.system_accounts(session).mpesa,
        inbox_id=row.id,
    )


HANDLERS: Mapping[str, Handler] = {
    "c2b_confirmation": c2b_confirmation,
    "stk_result": stk_result,
    "b2c_result": payout_results.b2c_result,
    "b2c_timeout": payout_results.b2c_timeout,
    "status_result": payout_results.status_result,
    "status_timeout": payout_results.status_timeout,
}
