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
        stored = session.execute(select(BusinessDayTotals.business_date).order_by(BusinessDayTotals.business_date)).scalars().all()
    assert stored == [D1 + timedelta(days=n) for n in range(6)]  # every past day; today is read live
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
