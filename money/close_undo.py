"""Undoing a mistaken daily close (``fleetpay undo-close``): correcting entries, never edits.

Closes are undone last first: a day is undone only while no close has run after it (for any of its
drivers), since each close starts from the state the one before it left. Per driver, in a transaction of their
own under their row lock:

- the close's postings are reversed by postings that name them (``corrects_posting_id``):
  ``target → revenue`` of the contributions, and the bonus (a bonus already paid out leaves the
  driver's ``payable`` below zero: a debt their next shares pay back before anything goes out);
- misses and the carried shortfall go back to what the day started with, and so does the next
  day's target if its row exists;
- a termination flag the close raised is cleared, the unsent deposit refund taken back, and the
  vehicle it freed given back if nobody has taken it since;
- the day row is open again and counts the undo, so the next close of that day keys its postings
  ``…/<n>`` (``money.daily_close.day_key``) and the undone ones stay in the ledger as they were.

Payouts the close reserved from shares already earned stay: that money was owed whatever the close
decided. The day's ``daily_closes`` row goes, and the undo is recorded with who and why; the
scheduler closes the day again once it has ended and is within its catch-up window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta, timezone
from typing import Literal

import structlog
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import fleet, ledger
from db.audit import record_action
from db.models import DailyClose, DriverDay, Entry, Posting, Vehicle
from fleetpay.people import BadName, operator_name
from fleetpay.settings import Settings
from money.daily_close import CloseRefused, day_key, one_close_at_a_time
from money.standing import take_back_refund

log = structlog.get_logger("fleetpay.close")


@dataclass
class UndoSummary:
    business_date: date
    reopened: list[str] = field(default_factory=list)
    reinstated: list[str] = field(default_factory=list)
    vehicles_returned: list[str] = field(default_factory=list)
    # Freed vehicles someone else drives now: the operator decides (``drivers assign``).
    vehicles_taken: list[str] = field(default_factory=list)
    refunds_withdrawn: list[int] = field(default_factory=list)
    refunds_already_released: list[int] = field(default_factory=list)


def _closed_since(session: Session, day: date, driver_id: int | None = None) -> date | None:
    """A business day whose close ran after ``day``'s (for one driver, or any): each close starts
    from the state the one before it left, so only the last close run can be undone."""
    since = select(func.max(DriverDay.closed_at)).where(DriverDay.business_date == day)
    if driver_id is not None:
        since = since.where(DriverDay.driver_id == driver_id)
    query = select(DriverDay.business_date).where(
        DriverDay.business_date != day, DriverDay.closed_at > since.scalar_subquery())
    if driver_id is not None:
        query = query.where(DriverDay.driver_id == driver_id)
    return session.execute(query.order_by(DriverDay.closed_at.desc()).limit(1)).scalar_one_or_none()


def _reverse(session: Session, key: str, *, driver_id: int, day: date, operator: str, reason: str) -> None:
    """Post the exact opposite of the posting ``key`` (if it was made), naming it."""
    original = session.execute(select(Posting.id, Posting.kind).where(Posting.idempotency_key == key)).one_or_none()
    if original is None:
        return
    legs = session.execute(select(Entry.account_id, Entry.amount_cents).where(Entry.posting_id == original.id)).all()
    ledger.post(
        session, key=f"undo:{key}", kind=f"{original.kind}_undone", business_date=day, driver_id=driver_id,
        corrects_posting_id=original.id, memo={"operator": operator, "reason": reason},
        legs=[(account_id, -amount_cents) for account_id, amount_cents in legs],
    )


def undo_driver_day(
    session: Session, driver_id: int, day: date, settings: Settings, summary: UndoSummary, *, operator: str, reason: str
) -> None:
    driver = fleet.lock_driver(session, driver_id)
    row = session.execute(
        select(DriverDay).where(DriverDay.driver_id == driver_id, DriverDay.business_date == day)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None or row.closed_at is None:
        return
    if (later := _closed_since(session, day, driver_id)) is not None:  # closed meanwhile
        raise CloseRefused(f"{driver.code}'s business day {later} was closed after {day}: undo that close first")
    for kind in ("close", "bonus"):
        _reverse(session, day_key(kind, driver.code, day, row.reopened), driver_id=driver.id, day=day,
                 operator=operator, reason=reason)
    if row.close_outcome in ("met", "missed"):  # a paused close changed nothing of the driver's
        # Reinstated since this close flagged them: the person's fresh start stands (no misses).
        misses = 0 if row.flagged and driver.status != "flagged" else row.misses_carried
        driver.consecutive_misses, driver.rollover_cents = misses, row.carried_cents
        base_cents = fleet.driver_terms(driver, settings).base_target_cents
        session.execute(
            update(DriverDay)
            .where(DriverDay.driver_id == driver.id, DriverDay.business_date == day + timedelta(days=1))
            .values(target_cents=base_cents + row.carried_cents, carried_cents=row.carried_cents,
                    misses_carried=misses)
        )
    if row.flagged:
        _unflag(session, driver, row, summary, operator=operator, reason=reason)
    row.closed_at, row.close_outcome, row.flagged, row.freed_vehicle_id = None, None, False, None
    row.reopened += 1
    summary.reopened.append(driver.code)


def _unflag(session: Session, driver, row: DriverDay, summary: UndoSummary, *, operator: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    refunds = take_back_refund(session, driver, operator=operator, reason=reason, business_date=row.business_date,
                               made_on=row.business_date)
    summary.refunds_withdrawn += refunds["refunds_withdrawn"]
    summary.refunds_already_released += refunds["refunds_already_released"]
    if driver.status == "flagged":
        driver.status = "active"
        summary.reinstated.append(driver.code)
    if row.freed_vehicle_id is None:
        return
    driving = session.execute(select(exists().where(Vehicle.regular_driver_id == driver.id))).scalar_one()
    # Conditional: an assignment committed meanwhile is never overwritten.
    returned = None if driving else session.execute(
        update(Vehicle).where(Vehicle.id == row.freed_vehicle_id, Vehicle.regular_driver_id.is_(None))
        .values(regular_driver_id=driver.id).returning(Vehicle.code)
    ).scalar_one_or_none()
    if returned:
        summary.vehicles_returned.append(returned)
    else:
        summary.vehicles_taken.append(session.execute(select(Vehicle.code).where(Vehicle.id == row.freed_vehicle_id)).scalar_one())


def undoable(session: Session, day: date) -> list[int]:
    """The drivers whose close of ``day`` an undo would reverse; ``CloseRefused`` for a day that
    is not closed or one closed before the last close run."""
    closed = session.execute(select(DriverDay.driver_id).where(
        DriverDay.business_date == day, DriverDay.closed_at.is_not(None)).order_by(DriverDay.driver_id)).scalars().all()
    if not closed and session.get(DailyClose, day) is None:
        raise CloseRefused(f"business day {day} is not closed: nothing to undo")
    if (later := _closed_since(session, day)) is not None:
        raise CloseRefused(f"business day {later} was closed after {day}: closes are undone last first, "
                           f"undo {later} first")
    return list(closed)


def closed_at(session: Session, day: date) -> str | None:
    """When ``day``'s close ran (ISO), which names that close: a day closed again after an undo
    has another."""
    ran = session.execute(select(DailyClose.closed_at).where(DailyClose.business_date == day)).scalar_one_or_none()
    return None if ran is None else ran.astimezone(timezone.utc).isoformat()


def undo_close(sessions: sessionmaker[Session], day: date, settings: Settings, *, operator: str, reason: str,
               close_ran_at: str | None | Literal["any"] = "any", drivers: int | None = None) -> UndoSummary:
    """Undo the close of ``day`` for every driver it closed (see the module docstring);
    ``CloseRefused`` for a day that is not closed, when a close ran after it, or while a close or
    another undo runs; with ``close_ran_at`` (``closed_at``) and ``drivers``, also when the close
    there now is not that one (undone and run again, or finished for more drivers, since it was asked)."""
    if not operator.strip() or not reason.strip():
        raise CloseRefused("undoing a close names who decided it and why")
    try:
        operator = operator_name(operator)
    except BadName as error:
        raise CloseRefused(str(error)) from error
    with one_close_at_a_time(sessions, settings, wait=False):
        return _undo_close(sessions, day, settings, operator=operator, reason=reason, close_ran_at=close_ran_at,
                           drivers=drivers)


def _undo_close(sessions: sessionmaker[Session], day: date, settings: Settings, *, operator: str, reason: str,
                close_ran_at: str | None | Literal["any"], drivers: int | None) -> UndoSummary:
    summary = UndoSummary(day)
    with sessions() as session:
        closed = undoable(session, day)
        if close_ran_at != "any" and (now := closed_at(session, day)) != close_ran_at:
            raise CloseRefused(f"the close of {day} asked about (run at {close_ran_at}) is not the one there now "
                               f"(run at {now}): ask again")
        if drivers is not None and len(closed) != drivers:
            raise CloseRefused(f"the close of {day} was asked about for {drivers} drivers and now closes {len(closed)}: "
                               "ask again")
    for driver_id in closed:
        with sessions.begin() as session:
            undo_driver_day(session, driver_id, day, settings, summary, operator=operator, reason=reason)
    with sessions.begin() as session:
        session.execute(delete(DailyClose).where(DailyClose.business_date == day))
        record_action(session, action="close_undone", subject=str(day), operator=operator, reason=reason,
                      detail={k: v for k, v in vars(summary).items() if k != "business_date"})
    log.warning("business_day_close_undone", business_date=str(day), operator=operator, reason=reason,
                drivers=len(summary.reopened))
    return summary
