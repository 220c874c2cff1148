"""A driver's standing, by hand: reinstating a driver the close flagged for termination.

Flagging (``money.daily_close``) moved the deposit to ``payable`` and made a refund payout that
waits for an operator's approval. Reinstating withdraws that payout while it is still unsent
(``money.payouts.withdraw``) and puts the money back in the deposit; a refund already released is
left alone (the driver has been paid their deposit; it stays paid). Every step is recorded with who
and why (``db.audit``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db import fleet
from db.audit import record_action
from db.models import Driver, DriverDay, Payout, Posting
from fleetpay.payout_states import TERMINAL
from money.deposits import withdraw_payout
from money.payouts import PayoutError

log = structlog.get_logger("fleetpay.standing")


def take_back_refund(
    session: Session, driver: Driver, *, operator: str, reason: str, business_date: date, made_on: date | None = None
) -> dict[str, list[int]]:
    """Withdraw the driver's unsent deposit refunds (those the close of ``made_on`` made, or all)
    and return their money to the deposit (call under the driver's lock). Returns the payouts
    withdrawn and those released already and not yet settled (approved, on their way)."""
    query = select(Payout).where(Payout.driver_id == driver.id, Payout.cause_key.startswith(f"refund:{driver.code}"),
                                 Payout.state.not_in(TERMINAL))
    if made_on is not None:
        query = query.where(Payout.id.in_(select(Posting.payout_id).where(
            Posting.kind == "payout_reserve", Posting.business_date == made_on)))
    refunds = session.execute(query.order_by(Payout.id)).scalars().all()
    withdrawn, released = [], []
    for refund in refunds:
        try:
            withdraw_payout(session, refund.id, operator=operator, reason=reason, business_date=business_date)
        except PayoutError:  # approved (and maybe sent) already: it stays released
            released.append(refund.id)
            continue
        withdrawn.append(refund.id)
    return {"refunds_withdrawn": withdrawn, "refunds_already_released": released}


def reinstate(session: Session, driver_code: str, *, operator: str, reason: str, business_date: date) -> dict[str, Any]:
    """Clear a termination flag: the driver is active again with no misses counted (their open
    shortfall stays owed), their unsent deposit refund is taken back. The vehicle is not given back
    here: ``drivers assign`` does that, since it may have a new driver. ``fleet.FleetError`` for a
    driver who is not flagged."""
    driver = fleet.lock_driver(session, fleet.get_driver(session, driver_code).id)
    if driver.status != "flagged":
        raise fleet.FleetError(f"driver {driver_code} is {driver.status}: only a flagged driver can be reinstated")
    refunds = take_back_refund(session, driver, operator=operator, reason=reason, business_date=business_date)
    driver.status, driver.consecutive_misses = "active", 0
    session.execute(update(DriverDay).where(DriverDay.driver_id == driver.id, DriverDay.closed_at.is_(None))
                    .values(misses_carried=0))
    document = {"driver": driver.code, "status": "active", **refunds}
    record_action(session, action="driver_reinstated", subject=driver.code, operator=operator, reason=reason,
                  detail=document)
    log.warning("driver_reinstated", operator=operator, reason=reason, **document)
    return document
