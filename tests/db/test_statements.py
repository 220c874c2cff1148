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
    assert stored == [D1 + timedelta(days=n) for n in range(7 - SETTLED_AFTER_DAYS)]  # not the last days: still moving
    pay_fare(fresh_sessions, config, "801", "Q-late", 5_000, today)  # today still moves
    with fresh_sessions.begin() as session:
        again = dashboard(session, today, days=7)
    assert [day["takings_cents"] for day in again["chart"]] == expected[:-1] + [75_000]
