"""What the console reads: a driver's statement (every entry of one account, with its receipt and
a running balance) and the fleet's numbers for the dashboard."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func, select, text
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
    ``RECENT_REFRESH``; a day folded while it was today (``folded_before``) is computed whole.
    Stores what it computes."""
    settled = until - timedelta(days=SETTLED_AFTER_DAYS - 1)
    stored = {row.business_date: row for row in session.execute(
        select(BusinessDayTotals).where(BusinessDayTotals.business_date.between(since, until))).scalars()}
    fresh_since = session.execute(select(func.now() - RECENT_REFRESH)).scalar_one()
    keep = {day for day, row in stored.items()
            if row.folded_before is None and (day <= settled or row.computed_at > fresh_since)}
    takings, paid = _day_totals(session, mpesa, since, until, skip=keep)
    computed = [since + timedelta(days=n) for n in range((until - since).days + 1) if since + timedelta(days=n) not in keep]
    if computed:
        rows = [{"business_date": day, "takings_cents": takings.get(day, 0), "paid_out_cents": paid.get(day, 0)} for day in computed]
        insert = pg_insert(BusinessDayTotals).values(rows)
        session.execute(insert.on_conflict_do_update(
            index_elements=[BusinessDayTotals.business_date],
            set_={"takings_cents": insert.excluded.takings_cents, "paid_out_cents": insert.excluded.paid_out_cents,
                  "shares_cents": 0, "contributions_cents": 0, "folded_before": None, "computed_at": func.now()}))
    for day in keep:
        takings[day], paid[day] = stored[day].takings_cents, stored[day].paid_out_cents
    return takings, paid


# Today's postings are added to today's stored totals once no transaction that could still commit
# one of them is open; the last minute, and anything an open transaction may yet commit, is read live.
TODAY_SETTLE = timedelta(minutes=1)

Figures = tuple[int, int, int, int]  # takings, paid out, drivers' shares, contributions to targets


def _today_sums(session: Session, mpesa: int, today: date, since: datetime | None, before: datetime | None) -> Figures:
    """The figures of ``today``'s postings made in [since, before). Contributions are summed as the
    reconciliation proves each driver day's (``db.reconcile``): fares and driver payments into targets."""
    money_in = func.sum(Entry.amount_cents).filter(Entry.account_id == mpesa, Entry.amount_cents < 0,
                                                   Posting.kind.in_(("fare", "driver_payment")))
    money_out = func.sum(Entry.amount_cents).filter(Entry.account_id == mpesa, Entry.amount_cents > 0,
                                                    Posting.kind.in_(("payout_paid", "payout_paid_after_failure")))
    shares = func.sum(Entry.amount_cents).filter(Posting.kind == "fare", Account.kind == "payable")
    contributions = func.sum(Entry.amount_cents).filter(Posting.kind.in_(("fare", "driver_payment")), Account.kind == "target")
    query = (select(func.coalesce(-money_in, 0), func.coalesce(money_out, 0), func.coalesce(shares, 0),
                    func.coalesce(contributions, 0))
             .select_from(Posting).join(Entry, Entry.posting_id == Posting.id).join(Account, Account.id == Entry.account_id)
             .where(Posting.business_date == today))
    if since is not None:
        query = query.where(Posting.created_at >= since)
    if before is not None:
        query = query.where(Posting.created_at < before)
    row = session.execute(query).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


# Before when every posting of today is there to stay: ``settle`` ago, or when the oldest transaction
# still open in this database began. NULL (fold nothing) when that cannot be known: a session this
# role may not see (another role's, without ``pg_read_all_stats``: its backend_type is hidden), one
# not tracked (``track_activities`` off), or a prepared transaction.
_CUTOFF = text("""
    SELECT CASE WHEN bool_or(backend_type IS NULL OR state = 'disabled'
                             OR (state IS NULL AND backend_type = 'client backend'))
                  OR EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = current_database())
                THEN NULL
                ELSE least(now() - :settle, min(xact_start)) END
      FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
""")


def _today(session: Session, mpesa: int, today: date, settle: timedelta = TODAY_SETTLE) -> Figures:
    """Today's figures, exact as of this read: the stored totals of the postings folded so far,
    plus the rest read live.

    A posting's ``created_at`` is its transaction's start. Every transaction that started before
    the oldest one still open in this database has ended, so the postings made before that moment
    (and before ``settle`` ago) are all there will ever be of them: they are added to the stored
    totals once, under the row's lock, and ``folded_before`` moves on. Those made since are summed
    live (``ix_postings_business_date_created_at`` finds them). A view that finds another folding
    (the row locked) reads the stored totals as committed and the rest live: views never wait."""
    today_row = select(BusinessDayTotals).where(BusinessDayTotals.business_date == today)
    row = session.execute(today_row.with_for_update(skip_locked=True)).scalar_one_or_none()
    if row is None and session.execute(today_row).scalar_one_or_none() is None:  # the day's first view
        session.execute(pg_insert(BusinessDayTotals).values(business_date=today, takings_cents=0, paid_out_cents=0)
                        .on_conflict_do_nothing())
        row = session.execute(today_row.with_for_update(skip_locked=True)).scalar_one_or_none()
    locked = row is not None
    if row is None:  # another view is folding: its commit will carry it on
        row = session.execute(today_row).scalar_one()
    # Nothing of today folded yet (or, if the clock went back, a whole day stored): start from zero.
    stored: Figures = ((0, 0, 0, 0) if row.folded_before is None else
                       (row.takings_cents, row.paid_out_cents, row.shares_cents, row.contributions_cents))
    cutoff = session.execute(_CUTOFF, {"settle": settle}).scalar_one() if locked else None
    if cutoff is not None and (row.folded_before is None or cutoff > row.folded_before):
        added = _today_sums(session, mpesa, today, row.folded_before, cutoff)
        stored = (stored[0] + added[0], stored[1] + added[1], stored[2] + added[2], stored[3] + added[3])
        row.takings_cents, row.paid_out_cents, row.shares_cents, row.contributions_cents = stored
        row.folded_before, row.computed_at = cutoff, func.now()
        session.flush()
    live = _today_sums(session, mpesa, today, row.folded_before, None)
    return stored[0] + live[0], stored[1] + live[1], stored[2] + live[2], stored[3] + live[3]


def dashboard(session: Session, today: date, *, days: int = 30) -> dict[str, Any]:
    """Today's money, the payouts by state, suspense, the last check and close, and ``days`` of
    takings and payouts for a chart (past days' figures are stored, ``_past_days``: call in a
    transaction that commits)."""
    system = ledger.system_accounts(session)
    since = today - timedelta(days=days - 1)
    takings, paid = _past_days(session, system.mpesa, since, today - timedelta(days=1))
    takings[today], paid[today], shares, contributed = _today(session, system.mpesa, today)
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
