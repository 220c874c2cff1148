"""What the console reads (``db.statements``): the dashboard's chart stores a settled day's totals
once and shows the same figures the ledger gives."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from db.models import BusinessDayTotals
from db.statements import SETTLED_AFTER_DAYS, dashboard
from tests.books.test_daily_close import D1, add, pay_fare, settings


def test_the_chart_is_the_ledger_and_settled_days_are_stored_once(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    add(fresh_sessions, "D800001", "801")
    today = D1 + timedelta(days=6)
    for n in range(7):  # KES 100 × (n + 1) on each of seven days
        pay_fare(fresh_sessions, config, "801", f"Q{n}", 10_000 * (n + 1), D1 + timedelta(days=n))
    with fresh_sessions.begin() as session:
        first = dashboard(session, today, days=7)
    expected = [10_000 * (n + 1) for n in range(7)]
    assert [day["takings_cents"] for day in first["chart"]] == expected
    assert first["takings_cents"] == 70_000
    with fresh_sessions() as session:
        stored = session.execute(select(BusinessDayTotals.business_date, BusinessDayTotals.folded_before.is_not(None))
                                 .order_by(BusinessDayTotals.business_date)).all()
    # every past day whole; today as far as its postings have settled (the rest is read live)
    assert stored == [(D1 + timedelta(days=n), False) for n in range(6)] + [(today, True)]
    pay_fare(fresh_sessions, config, "801", "Q-late", 5_000, today)  # today still moves
    with fresh_sessions.begin() as session:
        again = dashboard(session, today, days=7)
    assert [day["takings_cents"] for day in again["chart"]] == expected[:-1] + [75_000]


def test_a_recent_day_is_computed_again_a_settled_one_never(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    config = settings()
    add(fresh_sessions, "D800002", "802")
    today = D1 + timedelta(days=6)
    old, recent = D1, today - timedelta(days=1)
    for day, receipt in ((old, "R-old"), (recent, "R-recent")):
        pay_fare(fresh_sessions, config, "802", receipt, 10_000, day)
    with fresh_sessions.begin() as session:
        dashboard(session, today, days=7)
    for day, receipt in ((old, "R-old-late"), (recent, "R-recent-late")):  # payments arriving later
        pay_fare(fresh_sessions, config, "802", receipt, 10_000, day)
    with fresh_sessions.begin() as session:  # ten minutes on
        session.execute(text("UPDATE business_day_totals SET computed_at = computed_at - interval '11 minutes'"))
    with fresh_sessions.begin() as session:
        chart = {day["day"]: day["takings_cents"] for day in dashboard(session, today, days=7)["chart"]}
    assert chart[recent.isoformat()] == 20_000  # younger than SETTLED_AFTER_DAYS: recomputed
    assert chart[old.isoformat()] == 10_000 and (today - old).days >= SETTLED_AFTER_DAYS  # settled: kept


def test_today_is_exact_while_a_transaction_that_posts_today_is_still_open(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """Today's figures are stored as its postings settle: a posting an open transaction may still
    commit is read live until it has, then counted once, never twice and never lost."""
    from db import fleet, ledger
    from db.statements import _today
    from money.payments import apply_payment

    config = settings()
    add(fresh_sessions, "D800003", "803")
    add(fresh_sessions, "D800004", "804")
    today = D1
    pay_fare(fresh_sessions, config, "803", "S1", 10_000, today)

    def figures() -> tuple[tuple[int, int, int, int], int | None]:
        with fresh_sessions.begin() as session:
            mpesa = ledger.system_accounts(session).mpesa
            read = _today(session, mpesa, today, settle=timedelta(0))
            folded = session.execute(select(BusinessDayTotals.takings_cents).where(BusinessDayTotals.business_date == today)).scalar_one()
        return read, folded

    assert figures() == ((10_000, 0, 5_000, 5_000), 10_000)  # nothing open: all of it folded (a 50 % share, the rest towards the target)
    still_open = fresh_sessions()
    still_open.begin()
    apply_payment(still_open, key="c2b:S2", amount_cents=20_000, business_date=today,
                  payee=fleet.payee_for_vehicle(still_open, "803"), settings=config,
                  source_account=ledger.system_accounts(still_open).mpesa)
    assert figures() == ((10_000, 0, 5_000, 5_000), 10_000)  # not committed: not there, and not folded past it
    pay_fare(fresh_sessions, config, "804", "S3", 5_000, today)  # committed, but after the open one began
    assert figures() == ((15_000, 0, 7_500, 7_500), 10_000)  # read live until the open transaction ends
    still_open.commit()
    still_open.close()
    assert figures() == ((35_000, 0, 17_500, 17_500), 35_000)  # each once
    assert figures() == ((35_000, 0, 17_500, 17_500), 35_000)  # and again: nothing folded twice


def test_a_view_never_waits_for_another_that_is_folding(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from db import ledger
    from db.statements import _today

    config = settings()
    add(fresh_sessions, "D800005", "805")
    with fresh_sessions.begin() as first:  # the day's first view makes today's row
        mpesa = ledger.system_accounts(first).mpesa
        assert _today(first, mpesa, D1, settle=timedelta(0))[0] == 0
    pay_fare(fresh_sessions, config, "805", "W1", 10_000, D1)
    with fresh_sessions.begin() as folding:  # a view that folds and has not committed yet
        assert _today(folding, mpesa, D1, settle=timedelta(0))[0] == 10_000
        pay_fare(fresh_sessions, config, "805", "W2", 5_000, D1)
        with fresh_sessions.begin() as other:  # would wait on the row's lock; reads around it instead
            assert _today(other, mpesa, D1, settle=timedelta(0)) == (15_000, 0, 7_500, 7_500)
    with fresh_sessions.begin() as later:
        assert _today(later, mpesa, D1, settle=timedelta(0)) == (15_000, 0, 7_500, 7_500)
        assert later.get(BusinessDayTotals, D1).takings_cents == 15_000
