"""Reconciliation fixes: correct what a check found, never by overwriting.

A fix corrects what a cache got wrong with an atomic ``+ delta`` under the driver's lock (never an
overwrite), or posts the missing payout settlement; each correction is recorded once per
discrepancy with the operator and reason, so a fix is itself idempotent. A broken posting cannot
be fixed by a program: it is reported for a person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from db import fleet, ledger
from db.models import Account, DriverDay, Entry, Payout, Posting, ReconciliationFix, ReconciliationRun
from db.reconcile import Discrepancy, check, record_run
from fleetpay.people import operator_name
from fleetpay.settings import Settings
from money.payouts import post_settlement


@dataclass(frozen=True)
class FixBy:
    operator: str
    reason: str
    run_id: int
    settings: Settings


def fix(session: Session, found: Discrepancy, by: FixBy) -> bool:
    """Correct one discrepancy, re-measured under the driver's lock; True if something changed.

    Idempotent: the correction is recorded under a key naming the discrepancy, so a second fix
    of the same discrepancy (or of one already mended) changes nothing.
    """
    if found.kind == "cached_balance":
        return _fix_cached_balance(session, found, by)
    if found.kind == "driver_day":
        return _fix_driver_day(session, found, by)
    if found.kind == "payout_in_flight":
        return _fix_payout(session, found, by)
    return False


def _record(session: Session, found: Discrepancy, by: FixBy, delta_cents: int) -> bool:
    key = f"{found.kind}:{found.subject}:{found.expected_cents}:{found.actual_cents}"
    inserted = session.execute(
        pg_insert(ReconciliationFix)
        .values(key=key, run_id=by.run_id, kind=found.kind, subject=found.subject,
                delta_cents=delta_cents, operator=by.operator, reason=by.reason)
        .on_conflict_do_nothing()
        .returning(ReconciliationFix.id)
    ).scalar_one_or_none()
    return inserted is not None


def _fix_cached_balance(session: Session, found: Discrepancy, by: FixBy) -> bool:
    account = session.get(Account, found.ref_id)
    assert account is not None and account.driver_id is not None
    fleet.lock_driver(session, account.driver_id)
    summed = session.execute(
        text("SELECT coalesce(sum(amount_cents), 0) FROM entries WHERE account_id = :a"), {"a": account.id}
    ).scalar_one()
    cached = ledger.balance_cents(session, account.id)
    delta = summed - cached
    if delta == 0 or not _record(session, found, by, delta):
        return False
    session.execute(
        update(Account).where(Account.id == account.id).values(balance_cents=Account.balance_cents + delta)
    )
    return True


def _fix_driver_day(session: Session, found: Discrepancy, by: FixBy) -> bool:
    assert found.ref_id is not None
    day = date.fromisoformat(found.subject.rsplit(" ", 1)[1])
    driver = fleet.lock_driver(session, found.ref_id)
    posted = session.execute(
        text("""
        SELECT coalesce(sum(e.amount_cents), 0) FROM entries e
          JOIN accounts a ON a.id = e.account_id AND a.kind = 'target' AND a.driver_id = :d
          JOIN postings p ON p.id = e.posting_id AND p.kind IN ('fare', 'driver_payment')
         WHERE p.business_date = :day
        """),
        {"d": driver.id, "day": day},
    ).scalar_one()
    row = fleet.driver_day(session, driver, day, fleet.driver_terms(driver, by.settings).base_target_cents)
    delta = posted - row.contributed_cents
    if delta == 0 or not _record(session, found, by, delta):
        return False
    session.execute(
        update(DriverDay)
        .where(DriverDay.driver_id == driver.id, DriverDay.business_date == day)
        .values(contributed_cents=DriverDay.contributed_cents + delta)
    )
    return True


def _fix_payout(session: Session, found: Discrepancy, by: FixBy) -> bool:
    """A terminal payout whose settlement posting is missing gets it; anything else about a
    payout's money needs a person (reported, not guessed). Re-measured under the driver's lock and
    the payout's: a payout that moved since the check (reopened, then paid) is not fixed twice."""
    driver_id = session.execute(select(Payout.driver_id).where(Payout.id == found.ref_id)).scalar_one()
    fleet.lock_driver(session, driver_id)
    payout = session.execute(
        select(Payout).where(Payout.id == found.ref_id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    in_flight_cents = session.execute(
        select(func.coalesce(func.sum(Entry.amount_cents), 0))
        .join(Posting, Posting.id == Entry.posting_id)
        .where(Posting.payout_id == payout.id, Entry.account_id == ledger.system_accounts(session).payouts_in_flight)
    ).scalar_one()
    if payout.state not in ("paid", "failed") or in_flight_cents != payout.amount_cents:
        return False
    if not _record(session, found, by, -payout.amount_cents):
        return False
    post_settlement(session, payout, memo={"operator": by.operator, "reason": by.reason})
    return True


def run_fix(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    operator: str,
    reason: str,
    on_each: Callable[[Discrepancy, bool], None] | None = None,
    only: frozenset[str] | None = None,
) -> tuple[int, list[Discrepancy], int]:
    """Check, then correct every fixable discrepancy in a transaction of its own (with ``only``,
    just those whose ``key`` it names: what a person approved, if it is still so).
    Returns the run id, what was found, and how many corrections were made."""
    operator = operator_name(operator)
    with sessions() as session:
        found = [d for d in check(session.connection()) if only is None or d.key in only]
        session.rollback()
    with sessions.begin() as session:
        run_id = record_run(session, kind="fix", found=found, operator=operator, reason=reason)
    by = FixBy(operator=operator, reason=reason, run_id=run_id, settings=settings)
    fixed = 0
    for discrepancy in found:
        with sessions.begin() as session:
            changed = fix(session, discrepancy, by)
        fixed += changed
        if on_each:
            on_each(discrepancy, changed)
    with sessions.begin() as session:
        session.execute(update(ReconciliationRun).where(ReconciliationRun.id == run_id).values(fixed=fixed))
    return run_id, found, fixed
