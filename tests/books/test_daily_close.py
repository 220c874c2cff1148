"""The daily close of docs/rules.md on a database of its own: rollover without double-counting,
misses and termination, bonus once, accrued shares paid, idempotent, and finished after a crash."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from db import fleet, ledger
from db.models import Driver, DriverDay, Payout, Posting, Vehicle
from db.reconcile import check
from fleetpay.settings import Settings
from money.daily_close import close_business_day
from money.payments import apply_payment

EAT = ZoneInfo("Africa/Nairobi")
D1, D2, D3, D4 = (date(2026, 11, d) for d in (20, 21, 22, 23))


def settings(**changes: object) -> Settings:
    return Settings(database_url="postgresql://unused/x", daily_target_cents=100_000, termination_misses=3, **changes)


def add(sessions, code: str, vehicle: str | None, *, substitute: bool = False, msisdn: str = "254700000001") -> int:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        driver = fleet.add_driver(session, code=code, name=code, msisdn=msisdn)
        driver.created_at = datetime(2026, 11, 1, tzinfo=EAT)  # the fleet existed before the days closed here
        if vehicle:
            fleet.add_vehicle(session, vehicle)
            fleet.assign(session, driver_code=code, vehicle_code=vehicle, substitute=substitute)
        return driver.id


def pay_fare(sessions, config: Settings, vehicle: str, receipt: str, amount_cents: int, day: date) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        apply_payment(
            session, key=f"c2b:{receipt}", amount_cents=amount_cents, business_date=day,
            payee=fleet.payee_for_vehicle(session, vehicle), settings=config,
            source_account=ledger.system_accounts(session).mpesa,
        )


def driver_state(sessions, code: str) -> tuple[int, int, str]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        driver = session.execute(select(Driver).where(Driver.code == code)).scalar_one()
        return driver.rollover_cents, driver.consecutive_misses, driver.status


def assert_books_reconcile(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        assert check(session.connection()) == []


def test_three_missed_days_roll_over_once_and_flag_the_driver(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(instant_payouts=False)
    add(fresh_sessions, "D100001", "101")
    with fresh_sessions.begin() as session:  # an operator's deposit top-up
        driver_id = fleet.get_driver(session, "D100001").id
        ledger.post(session, key="deposit:D100001", kind="deposit_topup", business_date=D1, driver_id=driver_id,
                    legs=[(ledger.system_accounts(session).mpesa, -250_050),
                          (ledger.driver_accounts(session, driver_id).deposit, 250_050)])

    pay_fare(fresh_sessions, config, "101", "R1", 120_000, D1)  # contributes 600 of 1,000
    close_business_day(fresh_sessions, D1, config)
    assert driver_state(fresh_sessions, "D100001") == (40_000, 1, "active")

    pay_fare(fresh_sessions, config, "101", "R2", 200_000, D2)  # contributes 1,000 of 1,400
    with fresh_sessions() as session:
        assert session.get(DriverDay, (driver_id, D2)).target_cents == 140_000
    close_business_day(fresh_sessions, D2, config)
    # Shortfall 400: tomorrow's target is 1,000 + 400, not yesterday's 1,400 + 400.
    assert driver_state(fresh_sessions, "D100001") == (40_000, 2, "active")

    close_business_day(fresh_sessions, D3, config)  # nothing paid at all
    assert driver_state(fresh_sessions, "D100001") == (140_000, 3, "flagged")
    with fresh_sessions() as session:
        assert session.get(DriverDay, (driver_id, D3)).target_cents == 140_000
        assert session.execute(select(Vehicle.regular_driver_id).where(Vehicle.code == "101")).scalar_one() is None
        refund = session.execute(select(Payout).where(Payout.cause_key == "refund:D100001")).scalar_one()
        assert (refund.amount_cents, refund.requires_approval, refund.state) == (250_000, True, "pending")
        accounts = ledger.driver_accounts(session, driver_id)
        assert ledger.balance_cents(session, accounts.deposit) == 50  # cents cannot go by B2C
        # The shares accrued (instant payouts off) went out with each close.
        closes = session.execute(select(Payout.amount_cents).where(Payout.cause_key.like("close:D100001:%"))).scalars().all()
        assert sorted(closes) == [60_000, 100_000]
        revenue = session.execute(
            select(func.count()).select_from(Posting).where(Posting.idempotency_key.like("close:D100001:%"))
        ).scalar_one()
        assert revenue == 2  # D3 contributed nothing: nothing to move
    assert_books_reconcile(fresh_sessions)


def test_closing_twice_changes_nothing_and_a_crash_is_finished_by_a_rerun(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(bonus_enabled=True, bonus_cents=20_000)
    codes = [f"D2000{n:02d}" for n in range(6)]
    for n, code in enumerate(codes):
        add(fresh_sessions, code, f"2{n:02d}", msisdn=f"2547110000{n:02d}")
        pay_fare(fresh_sessions, config, f"2{n:02d}", f"C{n}", 250_000 if n % 2 else 50_000, D1)

    closed_before_crash: list[int] = []

    def crash_after_two(driver_id: int) -> None:
        closed_before_crash.append(driver_id)
        if len(closed_before_crash) == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        close_business_day(fresh_sessions, D1, config, after_each=crash_after_two)
    rerun = close_business_day(fresh_sessions, D1, config)
    assert rerun.closed["already"] == 2 and rerun.closed["met"] + rerun.closed["missed"] == 4
    again = close_business_day(fresh_sessions, D1, config)
    assert again.closed == {"met": 0, "missed": 0, "paused": 0, "already": 6} and not again.payout_ids

    with fresh_sessions() as session:
        keys = session.execute(select(Posting.idempotency_key)).scalars().all()
        assert sorted(k for k in keys if k.startswith("close:")) == sorted(f"close:{c}:{D1}" for c in codes)
        # Odd drivers paid 2,500 at 50 %: 1,250 contributed ≥ 1,000 → met → one bonus each.
        assert sorted(k for k in keys if k.startswith("bonus:")) == sorted(f"bonus:{c}:{D1}" for c in codes[1::2])
        misses = dict(session.execute(select(Driver.code, Driver.consecutive_misses)).all())
        assert misses == {c: (0 if n % 2 else 1) for n, c in enumerate(codes)}
        bonus_payouts = session.execute(select(Payout.amount_cents).where(Payout.cause_key.like("close:%"))).scalars().all()
        assert sorted(bonus_payouts) == [20_000] * 3
    assert_books_reconcile(fresh_sessions)


def test_substitutes_and_drivers_without_a_vehicle_are_paused(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    add(fresh_sessions, "D300001", "301")
    add(fresh_sessions, "D300002", "302", substitute=True)
    add(fresh_sessions, "D300003", None)
    summary = close_business_day(fresh_sessions, D1, config)
    assert summary.closed == {"met": 0, "missed": 1, "paused": 2, "already": 0}
    assert driver_state(fresh_sessions, "D300002") == (0, 0, "active")
    assert driver_state(fresh_sessions, "D300003") == (0, 0, "active")


def test_a_payment_arriving_after_its_day_closed_goes_to_revenue(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    driver_id = add(fresh_sessions, "D400001", "401")
    pay_fare(fresh_sessions, config, "401", "L1", 40_000, D1)
    close_business_day(fresh_sessions, D1, config)
    pay_fare(fresh_sessions, config, "401", "L2", 40_000, D1)  # 23:59 on D1, processed after the close
    with fresh_sessions() as session:
        row = session.get(DriverDay, (driver_id, D1))
        accounts = ledger.driver_accounts(session, driver_id)
        assert row.contributed_cents == 20_000  # as closed
        assert ledger.balance_cents(session, accounts.target) == 0
    assert_books_reconcile(fresh_sessions)


def test_yesterday_is_the_business_day_that_ended_at_the_close_time() -> None:
    from money.daily_close import yesterday

    at = datetime(2026, 11, 24, 2, 30, tzinfo=EAT)
    assert yesterday(settings(), at) == date(2026, 11, 23)
    assert yesterday(settings(close_time=time(3, 0)), at) == date(2026, 11, 22)


def test_the_check_finds_what_only_a_bypassed_trigger_could_write(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """With the ledger's triggers switched off (what a careless superuser could do), the check
    still names the unbalanced posting, the empty one and the broken grand total."""
    from sqlalchemy import text

    driver_id = add(fresh_sessions, "D500001", "501")
    with fresh_sessions.begin() as session:
        session.execute(text("SET LOCAL session_replication_role = replica"))
        payable = ledger.driver_accounts(session, driver_id).payable
        one_leg = session.execute(text(
            "INSERT INTO postings (idempotency_key, kind, body_sha256, business_date) VALUES ('bad:1', 'raw', '', :d) RETURNING id"
        ), {"d": D1}).scalar_one()
        session.execute(text("INSERT INTO entries (posting_id, account_id, amount_cents) VALUES (:p, :a, 700)"),
                        {"p": one_leg, "a": payable})
        empty = session.execute(text(
            "INSERT INTO postings (idempotency_key, kind, body_sha256, business_date) VALUES ('bad:2', 'raw', '', :d) RETURNING id"
        ), {"d": D1}).scalar_one()
    with fresh_sessions() as session:
        found = {(d.kind, d.subject, d.actual_cents) for d in check(session.connection())}
    assert found == {
        ("posting_unbalanced", str(one_leg), 700),
        ("posting_unbalanced", str(empty), 0),
        ("ledger_total", "all entries", 700),
        ("cached_balance", "driver:D500001:payable", 0),  # the trigger that moves the cache was off too
    }
