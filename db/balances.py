"""A driver's balance as operators and drivers see it (``fleetpay balance``)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db import fleet, ledger
from db.models import DriverDay, Payout
from fleetpay.payout_states import OPEN
from fleetpay.settings import Settings


def driver_balance(session: Session, driver_code: str, business_date: date, settings: Settings) -> dict[str, Any]:
    driver = fleet.get_driver(session, driver_code)
    terms = fleet.driver_terms(driver, settings)
    day = session.get(DriverDay, (driver.id, business_date))
    target_cents = day.target_cents if day else terms.base_target_cents + driver.rollover_cents
    contributed_cents = day.contributed_cents if day else 0
    accounts = ledger.driver_accounts(session, driver.id)
    in_flight_cents, paid_out_cents = session.execute(
        select(
            func.coalesce(func.sum(case((Payout.state.in_(sorted(OPEN)), Payout.amount_cents))), 0),
            func.coalesce(func.sum(case((Payout.state == "paid", Payout.amount_cents))), 0),
        ).where(Payout.driver_id == driver.id)
    ).one()
    return {
        "driver": driver.code,
        "business_date": business_date.isoformat(),
        "target_cents": target_cents,
        "contributed_cents": contributed_cents,
        "left_to_target_cents": max(0, target_cents - contributed_cents),
        "payable_cents": ledger.balance_cents(session, accounts.payable),
        "in_flight_cents": int(in_flight_cents),
        "paid_out_cents": int(paid_out_cents),
        "deposit_cents": ledger.balance_cents(session, accounts.deposit),
        "consecutive_misses": driver.consecutive_misses,
    }
