"""A driver's balance as operators and drivers see it (``fleetpay balance``, the USSD menu, a statement by SMS)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db import fleet, ledger
from db.models import Driver, DriverDay, Payout
from fleetpay.payout_states import OPEN
from fleetpay.ussd_menu import DriverFacts, PayoutLine
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


def driver_by_msisdn(session: Session, msisdn: str) -> Driver | None:
    """The driver who owns this M-Pesa number (``2547…``): one not exited, the newest if several."""
    return session.execute(
        select(Driver).where(Driver.msisdn == msisdn, Driver.status != "exited").order_by(Driver.id.desc()).limit(1)
    ).scalar_one_or_none()


def ussd_facts(session: Session, driver: Driver, business_date: date, settings: Settings) -> DriverFacts:
    """What the USSD menu shows a driver: today, their money, their last three payouts."""
    balance = driver_balance(session, driver.code, business_date, settings)
    last = session.execute(
        select(Payout.amount_cents, Payout.state, Payout.receipt, Payout.created_at)
        .where(Payout.driver_id == driver.id).order_by(Payout.id.desc()).limit(3)
    ).all()
    zone = ZoneInfo(settings.timezone)
    return DriverFacts(
        code=driver.code, language=driver.language or settings.sms_default_language,  # type: ignore[arg-type]
        business_date=business_date.isoformat(), target_cents=balance["target_cents"],
        contributed_cents=balance["contributed_cents"], payable_cents=balance["payable_cents"],
        in_flight_cents=balance["in_flight_cents"],
        payouts=tuple(PayoutLine(amount, state, receipt, created.astimezone(zone).date().isoformat())
                      for amount, state, receipt, created in last),
    )


def statement_facts(session: Session, driver: Driver, last_day: date, days: int, settings: Settings) -> dict[str, Any]:
    """A driver's last ``days`` business days (contributed and target each day; a day with no row
    had nothing paid towards its base target) and what reached their M-Pesa meanwhile."""
    first_day = last_day - timedelta(days=days - 1)
    rows = dict(
        ((day, (contributed, target)) for day, contributed, target in session.execute(
            select(DriverDay.business_date, DriverDay.contributed_cents, DriverDay.target_cents)
            .where(DriverDay.driver_id == driver.id, DriverDay.business_date.between(first_day, last_day))
        ))
    )
    base = fleet.driver_terms(driver, settings).base_target_cents
    listed = [(first_day + timedelta(days=n)) for n in range(days)]
    figures = [(day.isoformat(), *rows.get(day, (0, base))) for day in listed]
    paid_out_cents = session.execute(
        select(func.coalesce(func.sum(Payout.amount_cents), 0))
        .where(Payout.driver_id == driver.id, Payout.state == "paid",
               Payout.completed_at >= datetime.combine(first_day, time(0), ZoneInfo(settings.timezone)))
    ).scalar_one()
    return {"days": [list(f) for f in figures], "contributed_cents": sum(f[1] for f in figures),
            "target_cents": sum(f[2] for f in figures), "paid_out_cents": int(paid_out_cents)}
