"""The scheduler's catch-up (``money.daily_close.days_to_close``) and a close that one driver's
failure must not stop, on a database of their own."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy import select, text

from db import fleet
from db.models import DailyClose, DriverDay
from money.daily_close import CATCH_UP_DAYS_MAX, close_business_day, days_to_close
from tests.books.test_daily_close import D1, D2, D3, D4, EAT, add, assert_books_reconcile, pay_fare, settings

NOW = datetime.combine(D4 + timedelta(days=1), time(9, 0), EAT)  # D4 has ended


def test_a_day_skipped_by_a_close_made_by_hand_is_still_closed(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    add(fresh_sessions, "D500001", "501")  # registered on Nov 1st
    close_business_day(fresh_sessions, D3, config)  # by hand, with D1 and D2 never closed
    with fresh_sessions() as session:
        todo = days_to_close(session, config, now=NOW)
    assert D1 in todo and D2 in todo and D3 not in todo and todo[-1] == D4
    assert todo[0] == D1.replace(day=1) and todo == sorted(todo)  # from the fleet's first day
    assert len(todo) == (D4 - todo[0]).days  # every day to D4, less D3
    far = datetime.combine(D4 + timedelta(days=60), time(9, 0), EAT)
    with fresh_sessions() as session:
        assert days_to_close(session, config, now=far)[0] == far.date() - timedelta(days=CATCH_UP_DAYS_MAX)


def test_money_on_a_day_before_a_driver_was_registered_is_closed(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    add(fresh_sessions, "D500002", "502")
    late = add(fresh_sessions, "D500003", "503", msisdn="254700000003")
    with fresh_sessions.begin() as session:  # registered after D1 ended, but given a D1 fare (an assignment)
        session.execute(text("UPDATE drivers SET created_at = :at WHERE id = :id"),
                        {"at": datetime.combine(D2, time(12), EAT), "id": late})
    pay_fare(fresh_sessions, config, "503", "C1", 50_000, D1)
    close_business_day(fresh_sessions, D1, config)
    with fresh_sessions() as session:
        assert session.get(DriverDay, (late, D1)).closed_at is not None
    assert_books_reconcile(fresh_sessions)


def test_one_driver_s_failure_does_not_stop_the_others_and_a_rerun_finishes(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    ok = add(fresh_sessions, "D500004", "504")
    bad = add(fresh_sessions, "D500005", "505", msisdn="254700000005")
    pay_fare(fresh_sessions, config, "504", "F1", 50_000, D1)
    pay_fare(fresh_sessions, config, "505", "F2", 50_000, D1)
    with fresh_sessions.begin() as session:  # PostgreSQL refuses one driver's close, as a real failure would
        session.execute(text("""
            CREATE FUNCTION refuse_close() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.idempotency_key LIKE 'close:D500005:%' THEN RAISE EXCEPTION 'refused for the test'; END IF;
            RETURN NEW; END $$;
            CREATE TRIGGER refuse_close BEFORE INSERT ON postings FOR EACH ROW EXECUTE FUNCTION refuse_close();
        """))
    first = close_business_day(fresh_sessions, D1, config)
    assert first.failed == [bad] and not first.complete
    later = close_business_day(fresh_sessions, D2, config, hold=frozenset(first.failed))
    assert later.held == [bad] and not later.complete  # their days close in order
    with fresh_sessions() as session:
        assert session.get(DriverDay, (ok, D1)).closed_at is not None and session.get(DriverDay, (ok, D2)).closed_at is not None
        assert session.get(DriverDay, (bad, D1)).closed_at is None
        assert session.execute(select(DailyClose.business_date)).scalars().all() == []  # not recorded as closed
        todo = days_to_close(session, config, now=NOW)
        assert D1 in todo and D2 in todo
    with fresh_sessions.begin() as session:
        session.execute(text("DROP TRIGGER refuse_close ON postings; DROP FUNCTION refuse_close()"))
    for day in (D1, D2):
        again = close_business_day(fresh_sessions, day, config)
        assert again.complete and again.closed["already"] == 1
    with fresh_sessions() as session:
        assert session.execute(select(DailyClose.business_date).order_by(DailyClose.business_date)).scalars().all() == [D1, D2]
        assert fleet.get_driver(session, "D500005").consecutive_misses == 2
    assert_books_reconcile(fresh_sessions)
