"""Money in suspense: list it, and let an operator assign it to a driver.

Assigning applies the fleet's normal rules with the payment's original M-Pesa time (its business
day), moving the money out of ``suspense`` by a posting keyed ``assign:<TransID>``: assigning twice
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import fleet, ledger
from db.audit import record_action
from db.fleet import FleetError, Payee
from db.models import Inbox, Vehicle
from fleetpay.people import operator_name
from fleetpay.settings import Settings
from money.payments import Applied, apply_payment
from schemas.callbacks import parse_c2b
from schemas.json_body import decode_json
from schemas.parsing import business_date, classify_account_ref


@dataclass(frozen=True)
class UnmatchedPayment:
    inbox_id: int
    trans_id: str
    amount_cents: int
    account_ref: str
    trans_time: datetime
    received_at: datetime


def _payment(row: Inbox) -> tuple[str, int, str, datetime]:
    """Only C2B confirmations reach suspense: an STK result is never posted (``money.callbacks``)."""
    payment = parse_c2b(decode_json(row.body.encode()))
    return payment.trans_id, payment.amount_cents, payment.bill_ref, payment.trans_time


def why_unmatched(session: Session, account_ref: str, settings: Settings) -> str:
    """Why a payment to ``account_ref`` found no driver, in words an operator reads."""
    ref = classify_account_ref(account_ref, vehicle_code_digits=settings.vehicle_code_digits,
                               driver_code_pattern=settings.driver_code_pattern)
    if ref.kind == "vehicle":
        known = session.execute(select(Vehicle.id).where(Vehicle.code == ref.code)).first()
        return f"vehicle {ref.code} has no driver" if known else f"no vehicle {ref.code}"
    if ref.kind == "driver":
        try:
            fleet.get_driver(session, ref.code)
        except FleetError:
            return f"no driver {ref.code}"
        return f"driver {ref.code} has no vehicle (paused)"
    return "the account typed is not a vehicle or driver code"


def list_unmatched(session: Session, *, limit: int = 1000) -> list[UnmatchedPayment]:
    rows = session.execute(
        select(Inbox).where(Inbox.status == "unmatched").order_by(Inbox.received_at).limit(limit)
    ).scalars()
    found = []
    for row in rows:
        trans_id, amount_cents, ref, at = _payment(row)
        found.append(UnmatchedPayment(row.id, trans_id, amount_cents, ref, at, row.received_at))
    return found


def assign_unmatched(
    session: Session,
    *,
    trans_id: str,
    driver_code: str,
    reason: str,
    operator: str,
    settings: Settings,
    as_: Literal["fare", "company"] | None = None,
) -> Applied:
    """Assign the unmatched payment ``trans_id`` to a driver. ``as_`` says whether it was a fare
    (split, paid out) or the driver paying the company; by default it follows the account
    reference the payer typed (a driver code means the driver paid). Recorded in
    ``operator_actions``."""
    operator = operator_name(operator)
    row = session.execute(
        select(Inbox)
        .where(Inbox.external_id == trans_id, Inbox.kind == "c2b_confirmation")
        .with_for_update()
    ).scalars().first()
    key = f"assign:{trans_id}"
    if row is None:
        raise FleetError(f"no payment {trans_id}")
    driver = fleet.get_driver(session, driver_code)  # an unknown driver is refused whatever the row says
    if row.status != "unmatched":
        assigned_to = row.reason.split(":")[1] if row.reason and row.reason.startswith("assigned:") else None
        if assigned_to == driver.code:
            return Applied("processed", f"already_assigned:{driver.code}")  # asked twice: nothing to do
        if assigned_to:
            raise FleetError(f"payment {trans_id} was already assigned to {assigned_to}: nothing changed")
        raise FleetError(f"payment {trans_id} is {row.status}, not unmatched: nothing changed")
    _, amount_cents, ref_text, at = _payment(row)
    ref = classify_account_ref(ref_text, vehicle_code_digits=settings.vehicle_code_digits,
                               driver_code_pattern=settings.driver_code_pattern)
    role = as_ or ("company" if ref.kind == "driver" else "fare")
    payee = Payee(driver.id, "company" if role == "company" else _fare_role(session, driver.id))
    applied = apply_payment(
        session,
        key=key,
        amount_cents=amount_cents,
        business_date=business_date(at, close_time=settings.close_time, tz=settings.timezone),
        payee=payee,
        settings=settings,
        source_account=ledger.system_accounts(session).suspense,
        inbox_id=row.id,
        memo={"operator": operator, "reason": reason, "trans_id": trans_id},
    )
    row.status, row.reason = "processed", f"assigned:{driver_code}:{operator}:{reason}"
    record_action(session, action="unmatched_assigned", subject=trans_id, operator=operator, reason=reason,
                  detail={"driver": driver.code, "amount_cents": amount_cents, "as": role})
    return applied


def _fare_role(session: Session, driver_id: int) -> Literal["regular", "substitute"]:
    regular = session.execute(select(Vehicle.id).where(Vehicle.regular_driver_id == driver_id)).first()
    return "regular" if regular else "substitute"
