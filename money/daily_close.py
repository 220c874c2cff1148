"""The daily close of docs/rules.md, once per driver per business day (the ``close_day`` actor and
``fleetpay close-day`` run it).

Idempotency: each driver is closed in a transaction of their own, under their row lock, and only
if their day row is not closed yet (``driver_days.closed_at``); every posting and payout it makes
has a key naming the driver and the day (``close:``, ``bonus:``, ``refund:``; ``…/<n>`` for the
n-th close of a day whose close was undone, ``money.close_undo``). A close that crashes half-way is
finished by running it again; a second run changes nothing.

Per driver (regular drivers; a driver with no vehicle, only a substitute's seat, or on a rostered
day off is paused):
- the day's contributions move ``target → revenue``;
- missed: consecutive misses + 1, the shortfall rolls over (tomorrow = base + shortfall, never
  yesterday's target + shortfall); at ``termination_misses`` the driver is flagged, their vehicle
  freed, and a deposit refund payout waits for an operator's approval;
- met: misses reset, the rollover cleared, and a bonus payout when bonuses are on;
- what has accrued in ``payable`` is paid out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from db import fleet, ledger
from db.engine import lock_engine
from db.locks import LockBusy, advisory_lock
from db.models import DailyClose, Driver, DriverDay, Posting, Vehicle
from fleetpay import rules
from fleetpay.settings import Settings
from money import notices
from money.deposits import refund_payable
from money.payouts import create_payout, reserve_payable
from schemas.parsing import business_date as business_date_of

log = structlog.get_logger("fleetpay.close")


@dataclass
class CloseSummary:
    business_date: date
    closed: dict[str, int] = field(default_factory=lambda: {"met": 0, "missed": 0, "paused": 0, "already": 0})
    flagged: list[str] = field(default_factory=list)
    payout_ids: list[int] = field(default_factory=list)
    # Drivers whose close failed (the error is logged), and those held back because an earlier
    # day of theirs is not closed: the day is not recorded as closed, and runs again.
    failed: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.failed or self.held)


def is_regular(session: Session, driver_id: int) -> bool:
    return session.execute(select(Vehicle.id).where(Vehicle.regular_driver_id == driver_id)).first() is not None


def day_key(kind: str, code: str, day: date, reopened: int) -> str:
    """The key of a close's posting or payout: ``close:D112006:2026-11-20`` for a day's first
    close, ``…/2`` for its close after one undo, and so on."""
    return f"{kind}:{code}:{day}" + (f"/{reopened + 1}" if reopened else "")


def close_driver_day(session: Session, driver_id: int, day: date, settings: Settings, summary: CloseSummary) -> None:
    driver = fleet.lock_driver(session, driver_id)
    terms = fleet.driver_terms(driver, settings)
    row = fleet.driver_day(session, driver, day, terms.base_target_cents)
    if row.closed_at is not None:
        summary.closed["already"] += 1
        return
    paused = (driver.status != "active" or not is_regular(session, driver.id)
              or fleet.is_day_off(session, driver.id, day))
    outcome = rules.close_day(
        target_cents=row.target_cents,
        contributed_cents=row.contributed_cents,
        base_target_cents=terms.base_target_cents,
        consecutive_misses=driver.consecutive_misses,
        termination_misses=settings.termination_misses,
        role_paused=paused,
    )
    accounts = ledger.driver_accounts(session, driver.id)
    system = ledger.system_accounts(session)
    if row.contributed_cents:
        ledger.post(
            session, key=day_key("close", driver.code, day, row.reopened), kind="close", business_date=day, driver_id=driver.id,
            legs=[(accounts.target, -row.contributed_cents), (system.revenue, row.contributed_cents)],
        )
    verdict = "paused" if paused else ("met" if outcome.met else "missed")
    row.closed_at, row.close_outcome = datetime.now(ZoneInfo(settings.timezone)), verdict
    summary.closed[verdict] += 1
    if not paused:
        driver.consecutive_misses = outcome.consecutive_misses
        driver.rollover_cents = outcome.shortfall_cents
        # A row for the next day may exist already (payments after midnight): its target must
        # carry today's shortfall.
        session.execute(
            update(DriverDay)
            .where(DriverDay.driver_id == driver.id, DriverDay.business_date == day + timedelta(days=1))
            .values(target_cents=outcome.next_target_cents, carried_cents=outcome.shortfall_cents,
                    misses_carried=outcome.consecutive_misses)
        )
    if outcome.met and settings.bonus_enabled and settings.bonus_cents > 0:
        ledger.post(
            session, key=day_key("bonus", driver.code, day, row.reopened), kind="bonus", business_date=day, driver_id=driver.id,
            legs=[(system.revenue, -settings.bonus_cents), (accounts.payable, settings.bonus_cents)],
        )
    notices.day_closed(
        session, driver, key=day_key("close", driver.code, day, row.reopened), day=day,
        contributed_cents=row.contributed_cents, target_cents=row.target_cents, met=outcome.met,
        carried_cents=outcome.shortfall_cents, misses=outcome.consecutive_misses,
        misses_max=settings.termination_misses, paused=paused,
    )
    if outcome.flag_termination and driver.status == "active":
        _flag_for_termination(session, driver, row, accounts, summary)
    payouts = reserve_payable(session, driver, settings, cause_key=day_key("close", driver.code, day, row.reopened),
                              business_date=day)
    summary.payout_ids.extend(payout.id for payout in payouts)
    log.info("driver_day_closed", driver=driver.code, business_date=str(day), outcome=verdict,
             contributed_cents=row.contributed_cents, target_cents=row.target_cents)


def _flag_for_termination(
    session: Session, driver: Driver, row: DriverDay, accounts: ledger.DriverAccounts, summary: CloseSummary
) -> None:
    """Flag, free the vehicle, and prepare the deposit refund for an operator to approve. The day
    row keeps what was done (flag, vehicle), so undoing the close can restore it."""
    driver.status = "flagged"
    row.flagged = True
    row.freed_vehicle_id = session.execute(
        update(Vehicle).where(Vehicle.regular_driver_id == driver.id).values(regular_driver_id=None).returning(Vehicle.id)
    ).scalar_one_or_none()
    refund_cents = rules.payout_amount_cents(ledger.balance_cents(session, accounts.deposit), minimum_cents=100)
    if refund_cents:
        # A driver reinstated and flagged again gets a refund of their own: ``refund:<code>/<n>``.
        earlier = session.execute(select(func.count()).select_from(Posting).where(
            Posting.driver_id == driver.id, Posting.idempotency_key.startswith(f"refund:{driver.code}"))).scalar_one()
        key = f"refund:{driver.code}" + (f"/{earlier + 1}" if earlier else "")
        ledger.post(
            session, key=key, kind="deposit_refund", business_date=row.business_date, driver_id=driver.id,
            legs=[(accounts.deposit, -refund_cents), (accounts.payable, refund_cents)],
        )
        # What the driver owes (paid more than owed) is repaid from the deposit first.
        if to_pay_cents := refund_payable(refund_cents, ledger.balance_cents(session, accounts.payable), minimum_cents=100):
            create_payout(session, driver=driver, amount_cents=to_pay_cents, cause_key=key,
                          business_date=row.business_date, requires_approval=True)
    summary.flagged.append(driver.code)
    log.warning("driver_flagged_for_termination", driver=driver.code, misses=driver.consecutive_misses,
                refund_cents=refund_cents)


class CloseRefused(ValueError):
    """A close that would hurt the books: the message says why and what to do."""


# One daily close or undo at a time, whatever runs it (scheduler, CLI): an undo overlapping a close
# of the same day could reopen a driver the close then records as closed.
CLOSE_LOCK_ID = int.from_bytes(b"fp-close", "big") >> 1


@contextmanager
def one_close_at_a_time(sessions: sessionmaker[Session], settings: Settings, *, wait: bool) -> Iterator[None]:
    """Hold the close lock: wait for it (a close), or refuse at once (an undo: a person asked). It is
    a session lock, on PostgreSQL itself when the sessions go through PgBouncer (``lock_engine``)."""
    try:
        with advisory_lock(lock_engine(settings, sessions.kw["bind"]), CLOSE_LOCK_ID, wait=wait):
            yield
    except LockBusy:
        raise CloseRefused("a daily close or an undo is running now: try again when it has finished "
                           "(nothing changed)") from None


def day_ends_at(day: date, settings: Settings) -> datetime:
    """The moment business day ``day`` ends: the close time of the next calendar day, local time."""
    return datetime.combine(day + timedelta(days=1), settings.close_time, ZoneInfo(settings.timezone))


def refusal(session: Session, day: date, settings: Settings, *, now: datetime | None = None) -> str | None:
    """Why closing ``day`` must be refused (without ``--force``), or None: a day that has not ended
    (its later fares would go straight to revenue), or a day before the fleet existed (it would
    count a miss for drivers who were not there)."""
    current = now or datetime.now(ZoneInfo(settings.timezone))
    if day_ends_at(day, settings) > current:
        return (f"business day {day} has not ended (it ends {day_ends_at(day, settings):%Y-%m-%d %H:%M} "
                f"{settings.timezone}): closing it now would send its later fares to revenue")
    first = session.execute(select(func.min(Driver.created_at))).scalar_one()
    if first is None or first >= day_ends_at(day, settings):
        since = "no driver is registered" if first is None else f"the first driver was registered on {first:%Y-%m-%d}"
        return f"business day {day} is before the fleet existed ({since}): it would count misses for nobody's fault"
    return None


def close_business_day(
    sessions: sessionmaker[Session],
    day: date,
    settings: Settings,
    *,
    forced_reason: str | None = None,
    after_each: Callable[[int], None] | None = None,
    hold: frozenset[int] = frozenset(),
) -> CloseSummary:
    """Close ``day`` for every driver registered before it ended (and anyone with money on that
    day), one transaction per driver; ``CloseRefused`` for a day that must not be closed
    (``refusal``) unless ``forced_reason`` says why it must be, which is recorded. A driver whose
    close fails does not stop the others; drivers in ``hold`` are left for later (their earlier
    day failed). The day is recorded as closed only when every driver is. ``after_each(driver_id)``
    is called after each driver (progress bars, tests). Waits for a close or undo already running."""
    with one_close_at_a_time(sessions, settings, wait=True):
        return _close_business_day(sessions, day, settings, forced_reason=forced_reason, after_each=after_each,
                                   hold=hold)


def _close_business_day(
    sessions: sessionmaker[Session],
    day: date,
    settings: Settings,
    *,
    forced_reason: str | None,
    after_each: Callable[[int], None] | None,
    hold: frozenset[int],
) -> CloseSummary:
    summary = CloseSummary(day)
    with sessions() as session:
        if forced_reason is None and (why := refusal(session, day, settings)):
            raise CloseRefused(why)
        has_day = select(DriverDay.driver_id).where(DriverDay.business_date == day)
        driver_ids = session.execute(
            select(Driver.id)
            .where(((Driver.status != "exited") & (Driver.created_at < day_ends_at(day, settings)))
                   | Driver.id.in_(has_day))  # money on a day it was not registered (an assignment), or exited since
            .order_by(Driver.id)
        ).scalars().all()
    for driver_id in driver_ids:
        if driver_id in hold:
            summary.held.append(driver_id)
            continue
        try:
            with sessions.begin() as session:
                close_driver_day(session, driver_id, day, settings, summary)
        except Exception:  # noqa: BLE001 — one driver's failure must not stop the fleet's close
            log.exception("driver_day_close_failed", driver_id=driver_id, business_date=str(day))
            summary.failed.append(driver_id)
        if after_each:
            after_each(driver_id)
    if not summary.complete:
        log.error("business_day_close_incomplete", business_date=str(day), failed=summary.failed, held=summary.held)
        return summary
    with sessions.begin() as session:
        session.execute(
            pg_insert(DailyClose).values(business_date=day, forced_reason=forced_reason)
            .on_conflict_do_update(index_elements=[DailyClose.business_date],
                                   set_={"forced_reason": func.coalesce(forced_reason, DailyClose.forced_reason)})
        )
    if forced_reason:
        log.warning("business_day_close_forced", business_date=str(day), reason=forced_reason)
    return summary


CATCH_UP_DAYS_MAX = 31


def days_to_close(session: Session, settings: Settings, *, now: datetime | None = None) -> list[date]:
    """Every ended business day not closed yet since the fleet's first day, oldest first, at most
    ``CATCH_UP_DAYS_MAX`` back: a scheduler that was down at the close time catches up when it
    comes back, and a day skipped (a later day closed by hand, a close undone or left incomplete)
    is closed too. Older days are left to a person (``fleetpay close-day --date``), and logged."""
    last_ended = yesterday(settings, now)
    first = session.execute(select(func.min(Driver.created_at))).scalar_one()
    if first is None:
        return []
    fleet_start = business_date_of(first, close_time=settings.close_time, tz=settings.timezone)
    start = max(fleet_start, last_ended - timedelta(days=CATCH_UP_DAYS_MAX - 1))
    closed = set(session.execute(select(DailyClose.business_date).where(DailyClose.business_date >= fleet_start)).scalars())
    older = [fleet_start + timedelta(days=n) for n in range((start - fleet_start).days)]
    if left := [day for day in older if day not in closed]:
        log.error("business_days_too_old_to_catch_up", count=len(left), oldest=str(left[0]), newest=str(left[-1]),
                  hint="close them with fleetpay close-day --date D, oldest first")
    return [day for n in range((last_ended - start).days + 1) if (day := start + timedelta(days=n)) not in closed]


def yesterday(settings: Settings, now: datetime | None = None) -> date:
    """The business day that ended at the last close time."""
    current = now or datetime.now(ZoneInfo(settings.timezone))
    return business_date_of(current, close_time=settings.close_time, tz=settings.timezone) - timedelta(days=1)
