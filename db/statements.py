"""What the console reads: a driver's statement (every entry of one account, with its receipt and
a running balance) and the fleet's numbers for the dashboard."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db import ledger
from db.models import Account, BusinessDayTotals, DailyClose, DriverDay, Entry, Payout, Posting, ReconciliationRun

STATEMENT_ROWS_MAX = 5_000


def statement(session: Session, driver_id: int, account: str, since: date, until: date) -> dict[str, Any]:
    """Every entry of the driver's ``account`` (payable, deposit or target) on business days
    ``since``…``until``, oldest first: its posting's kind, key (the M-Pesa receipt for a payment),
    amount and the balance after it; the opening and closing balances; at most
    ``STATEMENT_ROWS_MAX`` entries (``truncated`` says so)."""
    account_id = getattr(ledger.driver_accounts(session, driver_id), account)
    opening = session.execute(
        select(func.coalesce(func.sum(Entry.amount_cents), 0)).join(Posting, Posting.id == Entry.posting_id)
        .where(Entry.account_id == account_id, Posting.business_date < since)
    ).scalar_one()
    rows = session.execute(
        select(Posting.business_date, Posting.created_at, Posting.kind, Posting.idempotency_key, Entry.amount_cents,
               Entry.id)
        .join(Posting, Posting.id == Entry.posting_id)
        .where(Entry.account_id == account_id, Posting.business_date >= since, Posting.business_date <= until)
        .order_by(Posting.business_date, Entry.id)
        .limit(STATEMENT_ROWS_MAX + 1)
    ).all()
    balance = int(opening)
    entries = []
    for business_date, created_at, kind, key, amount_cents, entry_id in rows[:STATEMENT_ROWS_MAX]:
        balance += amount_cents
        entries.append({"entry_id": entry_id, "business_date": business_date.isoformat(), "at": created_at.isoformat(),
                        "kind": kind, "reference": receipt_of(key), "amount_cents": amount_cents,
                        "balance_cents": balance})
    return {"account": account, "since": since.isoformat(), "until": until.isoformat(), "opening_cents": int(opening),
            "closing_cents": balance, "entries": entries, "truncated": len(rows) > STATEMENT_ROWS_MAX}


def receipt_of(key: str) -> str:
    """What a person recognises in a posting key: the M-Pesa receipt of a payment (``c2b:X`` →
    ``X``), else the key itself."""
    for prefix in ("c2b:", "assign:"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# A business day this old takes no more payments (M-Pesa's callbacks and the 48-hour Pull recovery
# come sooner): its totals are stored for the chart the first time they are computed. Younger past
# days are computed again when their stored figures are older than RECENT_REFRESH.
SETTLED_AFTER_DAYS = 3
RECENT_REFRESH = timedelta(minutes=10)


def _day_totals(session: Session, mpesa: int, since: date, until: date, *, skip: set[date]) -> tuple[dict[date, int], dict[date, int]]:
    """Takings (money in from M-Pesa) and payouts (money out) per business day, from the ledger,
    for the days of ``since``…``until`` not in ``skip``."""
    days = [since + timedelta(days=n) for n in range((until - since).days + 1) if since + timedelta(days=n) not in skip]
    if not days:
        return {}, {}
    money_in = func.sum(Entry.amount_cents).filter(Entry.amount_cents < 0, Posting.kind.in_(("fare", "driver_payment")))
    money_out = func.sum(Entry.amount_cents).filter(
        Entry.amount_cents > 0, Posting.kind.in_(("payout_paid", "payout_paid_after_failure")))
    totals = session.execute(
        select(Posting.business_date, func.coalesce(-money_in, 0), func.coalesce(money_out, 0))
        .join(Entry, Entry.posting_id == Posting.id)
        .where(Entry.account_id == mpesa, Posting.business_date.in_(days))
        .group_by(Posting.business_date)
    ).all()
    return ({day: int(t) for day, t, _ in totals}, {day: int(p) for day, _, p in totals})


def _past_days(session: Session, mpesa: int, since: date, until: date) -> tuple[dict[date, int], dict[date, int]]:
    """The chart's past days, from ``business_day_totals``: a settled day is computed once; a day
    that may still take payments is computed again when its figures are older than
    ``RECENT_REFRESH``. Stores what it computes."""
    settled = until - timedelta(days=SETTLED_AFTER_DAYS - 1)
    stored = {row.business_date: row for row in session.execute(
        select(BusinessDayTotals).where(BusinessDayTotals.business_date.between(since, until))).scalars()}
    fresh_since = session.execute(select(func.now() - RECENT_REFRESH)).scalar_one()
    keep = {day for day, row in stored.items() if day <= settled or row.computed_at > fresh_since}
    takings, paid = _day_totals(session, mpesa, since, until, skip=keep)
    computed = [since + timedelta(days=n) for n in range((until - since).days + 1) if since + timedelta(days=n) not in keep]
    if computed:
        rows = [{"business_date": day, "takings_cents": takings.get(day, 0), "paid_out_cents": paid.get(day, 0)} for day in computed]
        insert = pg_insert(BusinessDayTotals).values(rows)
        session.execute(insert.on_conflict_do_update(
            index_elements=[BusinessDayTotals.business_date],
            set_={"takings_cents": insert.excluded.takings_cents, "paid_out_cents": insert.excluded.paid_out_cents,
                  "computed_at": func.now()}))
    for day in keep:
        takings[day], paid[day] = stored[day].takings_cents, stored[day].paid_out_cents
    return takings, paid


def _today(session: Session, mpesa: int, today: date) -> tuple[int, int, int]:
    """Today's takings, payouts and drivers' shares, live, in one pass over today's entries."""
    money_in = func.sum(Entry.amount_cents).filter(Entry.account_id == mpesa, Entry.amount_cents < 0,
                                                   Posting.kind.in_(("fare", "driver_payment")))
    money_out = func.sum(Entry.amount_cents).filter(Entry.account_id == mpesa, Entry.amount_cents > 0,
                                                    Posting.kind.in_(("payout_paid", "payout_paid_after_failure")))
    shares = func.sum(Entry.amount_cents).filter(Posting.kind == "fare", Account.kind == "payable")
    row = session.execute(
        select(func.coalesce(-money_in, 0), func.coalesce(money_out, 0), func.coalesce(shares, 0))
        .select_from(Posting).join(Entry, Entry.posting_id == Posting.id).join(Account, Account.id == Entry.account_id)
        .where(Posting.business_date == today)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def dashboard(session: Session, today: date, *, days: int = 30) -> dict[str, Any]:
    """Today's money, the payouts by state, suspense, the last check and close, and ``days`` of
    takings and payouts for a chart (past days' figures are stored, ``_past_days``: call in a
    transaction that commits)."""
    system = ledger.system_accounts(session)
    since = today - timedelta(days=days - 1)
    takings, paid = _past_days(session, system.mpesa, since, today - timedelta(days=1))
    takings[today], paid[today], shares = _today(session, system.mpesa, today)
    contributed = session.execute(
        select(func.coalesce(func.sum(DriverDay.contributed_cents), 0)).where(DriverDay.business_date == today)
    ).scalar_one()
    suspense = session.execute(
        select(func.coalesce(func.sum(Entry.amount_cents), 0)).where(Entry.account_id == system.suspense)
    ).scalar_one()
    payouts = dict(session.execute(select(Payout.state, func.count()).group_by(Payout.state)).all())
    waiting = session.execute(select(func.count()).select_from(Payout).where(
        Payout.state == "pending", Payout.requires_approval.is_(True))).scalar_one()
    check = session.execute(select(ReconciliationRun).where(ReconciliationRun.kind == "check")
                            .order_by(ReconciliationRun.id.desc()).limit(1)).scalar_one_or_none()
    last_close = session.execute(select(func.max(DailyClose.business_date))).scalar_one()
    open_days = session.execute(select(cast(func.count(), Integer)).select_from(DriverDay).where(
        DriverDay.closed_at.is_(None), DriverDay.business_date < today - timedelta(days=1))).scalar_one()
    taken_today = takings[today]
    return {
        "today": today.isoformat(),
        "takings_cents": taken_today,
        "contributions_cents": int(contributed),
        "driver_shares_cents": int(shares),
        "payouts": {state: int(count) for state, count in payouts.items()},
        "payouts_waiting_for_approval": int(waiting),
        "suspense_cents": int(suspense),
        "last_check": None if check is None else {"id": check.id, "discrepancies": check.discrepancies,
                                                   "finished_at": check.finished_at and check.finished_at.isoformat()},
        "last_close": last_close and last_close.isoformat(),
        "driver_days_left_open": int(open_days),
        "chart": [{"day": (since + timedelta(days=n)).isoformat(), "takings_cents": int(takings.get(since + timedelta(days=n), 0)),
                   "paid_out_cents": int(paid.get(since + timedelta(days=n), 0))} for n in range(days)],
    }


def closes(session: Session, *, limit: int = 60) -> list[dict[str, Any]]:
    """The daily closes, newest first: when each ran, whether it was forced (and why), and how the
    drivers' days came out."""
    outcomes = {
        (day, outcome): count for day, outcome, count in session.execute(
            select(DriverDay.business_date, DriverDay.close_outcome, func.count())
            .where(DriverDay.business_date.in_(select(DailyClose.business_date).order_by(DailyClose.business_date.desc())
                                               .limit(limit).scalar_subquery()))
            .group_by(DriverDay.business_date, DriverDay.close_outcome)
        ).all()
    }
    return [
        {"business_date": c.business_date.isoformat(), "closed_at": c.closed_at, "forced_reason": c.forced_reason,
         **{kind: outcomes.get((c.business_date, kind), 0) for kind in ("met", "missed", "paused")}}
        for c in session.execute(select(DailyClose).order_by(DailyClose.business_date.desc()).limit(limit)).scalars()
    ]


def reconciliations(session: Session, *, limit: int = 50) -> list[dict[str, Any]]:
    """The reconciliation runs, newest first."""
    return [
        {"id": r.id, "kind": r.kind, "started_at": r.started_at, "finished_at": r.finished_at,
         "discrepancies": r.discrepancies, "fixed": r.fixed, "operator": r.operator, "reason": r.reason, "error": r.error}
        for r in session.execute(select(ReconciliationRun).order_by(ReconciliationRun.id.desc()).limit(limit)).scalars()
    ]
