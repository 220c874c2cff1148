"""The reconciliation check runs its driver-day query on a second connection: that connection must
see the check's snapshot, not what was committed after it began."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text

from db import fleet
from db.reconcile import DRIVER_DAYS_SQL, _check_in_snapshot, check


def test_the_side_connection_reads_the_checks_snapshot(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    engine = fresh_sessions.kw["bind"]
    with fresh_sessions.begin() as session:
        driver = fleet.add_driver(session, code="DSNAP1", name="Snap Shot", msisdn="254700000001")
        fleet.driver_day(session, driver, date(2026, 11, 24), 150_000)

    with engine.connect() as checking:
        checking.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        snapshot = checking.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        with fresh_sessions.begin() as session:  # committed after the snapshot was taken
            session.execute(text("UPDATE driver_days SET contributed_cents = 700"))
        assert _check_in_snapshot(engine, snapshot) == {DRIVER_DAYS_SQL: []}

    with engine.connect() as later:
        assert [(d.kind, d.expected_cents, d.actual_cents) for d in check(later)] == [("driver_day", 0, 700)]
