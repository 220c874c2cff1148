"""Undoing a daily close (``money.close_undo``), reinstating a flagged driver
(``money.standing``) and rostered days off, on a database of their own: an undo restores exactly
what the day started with, a close after it decides as the first did, and the books reconcile."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from db import fleet, ledger
from db.models import DailyClose, Driver, DriverDay, OperatorAction, Payout, Posting, Vehicle
from db.reconcile import check
from money.close_undo import undo_close
from money.daily_close import CloseRefused, close_business_day
from money.standing import reinstate
from tests.books.test_daily_close import D1, D2, D3, D4, add, assert_books_reconcile, pay_fare, settings

WHO = {"operator": "amina", "reason": "closed the wrong day"}


def snapshot(sessions, code: str, day: date) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Everything a close of ``day`` changes for one driver."""
    with sessions() as session:
        driver = session.execute(select(Driver).where(Driver.code == code)).scalar_one()
        accounts = ledger.driver_accounts(session, driver.id)
        next_day = session.get(DriverDay, (driver.id, day + timedelta(days=1)))
        revenue = session.execute(select(func.coalesce(func.sum(ledger.Entry.amount_cents), 0)).where(
            ledger.Entry.account_id == ledger.system_accounts(session).revenue)).scalar_one()
        return {
            "driver": (driver.status, driver.consecutive_misses, driver.rollover_cents),
            "balances": {kind: ledger.balance_cents(session, getattr(accounts, kind)) + (
                # payouts the close reserved are owed whatever it decided: count them as payable
                session.execute(select(func.coalesce(func.sum(Payout.amount_cents), 0)).where(
                    Payout.driver_id == driver.id, Payout.state != "failed",
                    Payout.cause_key.like(f"close:{code}:%"))).scalar_one() if kind == "payable" else 0)
                for kind in ("payable", "deposit", "target")},
            "revenue": revenue,
            "vehicle": session.execute(select(Vehicle.code).where(Vehicle.regular_driver_id == driver.id)).scalar_one_or_none(),
            "next_day": None if next_day is None else (next_day.target_cents, next_day.carried_cents, next_day.misses_carried),
            "open_refunds": session.execute(select(func.count()).select_from(Payout).where(
                Payout.driver_id == driver.id, Payout.cause_key.like(f"refund:{code}%"), Payout.state == "pending")).scalar_one(),
        }


def deposit(sessions, code: str, cents: int) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        driver_id = fleet.get_driver(session, code).id
        ledger.post(session, key=f"deposit:{code}", kind="deposit_topup", business_date=D1, driver_id=driver_id,
                    legs=[(ledger.system_accounts(session).mpesa, -cents), (ledger.driver_accounts(session, driver_id).deposit, cents)])


def test_undoing_the_close_that_flagged_a_driver_restores_the_day_and_a_new_close_decides_the_same(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(instant_payouts=False)
    add(fresh_sessions, "D300001", "301")
    deposit(fresh_sessions, "D300001", 250_000)
    close_business_day(fresh_sessions, D1, config)
    close_business_day(fresh_sessions, D2, config)
    pay_fare(fresh_sessions, config, "301", "U1", 40_000, D3)
    pay_fare(fresh_sessions, config, "301", "U2", 40_000, D4)  # the next day has a row already
    before = snapshot(fresh_sessions, "D300001", D3)
    close_business_day(fresh_sessions, D3, config)  # the third miss
    flagged = snapshot(fresh_sessions, "D300001", D3)
    assert flagged["driver"][0] == "flagged" and flagged["vehicle"] is None and flagged["open_refunds"] == 1

    summary = undo_close(fresh_sessions, D3, config, **WHO)
    assert summary.reopened == ["D300001"] and summary.reinstated == ["D300001"]
    assert summary.vehicles_returned == ["301"] and len(summary.refunds_withdrawn) == 1
    assert snapshot(fresh_sessions, "D300001", D3) == before
    assert_books_reconcile(fresh_sessions)
    with fresh_sessions() as session:
        assert session.get(DailyClose, D3) is None
        actions = session.execute(select(OperatorAction).order_by(OperatorAction.id)).scalars().all()
        assert [(a.action, a.operator) for a in actions] == [("payout_withdrawn", "amina"), ("close_undone", "amina")]
        assert actions[-1].subject == str(D3)
        undone = session.execute(select(Posting.idempotency_key).where(Posting.corrects_posting_id.is_not(None))).scalars().all()
        assert undone == [f"undo:close:D300001:{D3}"]

    close_business_day(fresh_sessions, D3, config)  # closed again: the same decision, new keys
    again = snapshot(fresh_sessions, "D300001", D3)
    assert again == flagged
    with fresh_sessions() as session:
        keys = session.execute(select(Posting.idempotency_key).where(Posting.driver_id.is_not(None))).scalars().all()
        assert f"close:D300001:{D3}/2" in keys and "refund:D300001/2" in keys
    assert_books_reconcile(fresh_sessions)


def test_a_bonus_is_taken_back_and_misses_restored(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(bonus_enabled=True, bonus_cents=20_000, instant_payouts=False)
    add(fresh_sessions, "D300002", "302")
    close_business_day(fresh_sessions, D1, config)  # a miss
    pay_fare(fresh_sessions, config, "302", "B1", 500_000, D2)  # met, with a bonus
    before = snapshot(fresh_sessions, "D300002", D2)
    summary = close_business_day(fresh_sessions, D2, config)
    assert summary.closed["met"] == 1
    with fresh_sessions() as session:  # the bonus and the shares went out with the close
        assert session.execute(select(Payout.amount_cents).where(Payout.cause_key == f"close:D300002:{D2}")).scalar_one() == 270_000
    undo_close(fresh_sessions, D2, config, **WHO)
    # Shares reserved by the close count as payable in the snapshot: all else is as it was.
    assert snapshot(fresh_sessions, "D300002", D2) == before
    # The bonus had gone out with the shares: taking it back is a debt, shown to a person until the
    # next money owed repays it.
    with fresh_sessions() as session:
        driver_id = fleet.get_driver(session, "D300002").id
        assert ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).payable) == -20_000
    with fresh_sessions() as session:
        assert [(d.kind, d.actual_cents) for d in check(session.connection())] == [("overpayment", -20_000)]
    close_business_day(fresh_sessions, D2, config)  # closed again: met, the bonus granted again
    with fresh_sessions() as session:
        driver_id = fleet.get_driver(session, "D300002").id
        assert ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).payable) == 0
    assert_books_reconcile(fresh_sessions)


def test_only_the_last_close_run_can_be_undone(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    add(fresh_sessions, "D300003", "303")
    close_business_day(fresh_sessions, D1, config)
    close_business_day(fresh_sessions, D2, config)
    with pytest.raises(CloseRefused, match=f"{D2} was closed after {D1}"):
        undo_close(fresh_sessions, D1, config, **WHO)
    with pytest.raises(CloseRefused, match="not closed"):
        undo_close(fresh_sessions, D3, config, **WHO)
    with pytest.raises(CloseRefused, match="who decided it and why"):
        undo_close(fresh_sessions, D2, config, operator=" ", reason="x")
    undo_close(fresh_sessions, D2, config, **WHO)
    undo_close(fresh_sessions, D1, config, **WHO)  # now the last one run
    with fresh_sessions() as session:
        assert session.execute(select(func.count()).select_from(DriverDay).where(DriverDay.closed_at.is_not(None))).scalar_one() == 0
        assert session.execute(select(Driver.consecutive_misses)).scalar_one() == 0
    # A close run for an old day after later ones (a forced close) is the last run: undone first.
    close_business_day(fresh_sessions, D2, config)
    close_business_day(fresh_sessions, D1, config, forced_reason="backfill")
    undo_close(fresh_sessions, D1, config, **WHO)
    assert_books_reconcile(fresh_sessions)


def test_a_day_off_counts_no_miss_and_a_closed_day_cannot_be_rostered(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    add(fresh_sessions, "D300004", "304")
    with fresh_sessions.begin() as session:
        assert fleet.set_day_off(session, driver_code="D300004", day=D1, off=True, operator="amina", reason="rest")
        assert not fleet.set_day_off(session, driver_code="D300004", day=D1, off=True, operator="amina", reason="rest")
    summary = close_business_day(fresh_sessions, D1, config)
    assert summary.closed["paused"] == 1
    close_business_day(fresh_sessions, D2, config)
    with fresh_sessions() as session:
        assert session.execute(select(Driver.consecutive_misses)).scalar_one() == 1  # D2 only
    with fresh_sessions.begin() as session, pytest.raises(fleet.FleetError, match="closed already"):
        fleet.set_day_off(session, driver_code="D300004", day=D2, off=True, operator="amina", reason="late")


def test_reinstating_a_flagged_driver_takes_back_the_unsent_refund(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings().model_copy(update={"termination_misses": 1})
    add(fresh_sessions, "D300005", "305")
    deposit(fresh_sessions, "D300005", 100_000)
    close_business_day(fresh_sessions, D1, config)
    with fresh_sessions.begin() as session:
        document = reinstate(session, "D300005", business_date=D2, **WHO)
    assert document["status"] == "active" and len(document["refunds_withdrawn"]) == 1
    with fresh_sessions() as session:
        driver = session.execute(select(Driver).where(Driver.code == "D300005")).scalar_one()
        assert (driver.status, driver.consecutive_misses) == ("active", 0)
        assert ledger.balance_cents(session, ledger.driver_accounts(session, driver.id).deposit) == 100_000
        refund = session.get(Payout, document["refunds_withdrawn"][0])
        assert refund.state == "failed" and "withdrawn by amina" in refund.result_desc
    with fresh_sessions.begin() as session, pytest.raises(fleet.FleetError, match="only a flagged driver"):
        reinstate(session, "D300005", business_date=D2, **WHO)
    assert_books_reconcile(fresh_sessions)


def test_a_refund_already_released_is_not_taken_back(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from money.payouts import PayoutError, approve, claim, withdraw

    config = settings().model_copy(update={"termination_misses": 1})
    add(fresh_sessions, "D300006", "306")
    deposit(fresh_sessions, "D300006", 100_000)
    close_business_day(fresh_sessions, D1, config)
    with fresh_sessions.begin() as session:
        refund_id = session.execute(select(Payout.id).where(Payout.cause_key == "refund:D300006")).scalar_one()
        approve(session, refund_id, operator="amina")
        claim(session, refund_id)  # being sent
    with fresh_sessions.begin() as session, pytest.raises(PayoutError, match="never sent"):
        withdraw(session, refund_id, operator="amina", reason="changed my mind")
    summary = undo_close(fresh_sessions, D1, config, **WHO)
    assert summary.refunds_already_released == [refund_id] and summary.reinstated == ["D300006"]
    with fresh_sessions() as session:
        assert session.get(Payout, refund_id).state == "submitting"
    assert_books_reconcile(fresh_sessions)


def test_an_undo_is_refused_while_a_close_runs(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """An undo overlapping a close of the same day would reopen a driver the close then records as
    closed, and the scheduler would never close them again: one at a time."""
    config = settings(instant_payouts=False)
    first = add(fresh_sessions, "D300007", "307")
    add(fresh_sessions, "D300008", "308", msisdn="254700000002")
    refused: list[str] = []

    def undo_meanwhile(driver_id: int) -> None:
        if driver_id == first:
            with pytest.raises(CloseRefused, match="running now") as caught:
                undo_close(fresh_sessions, D1, config, **WHO)
            refused.append(str(caught.value))

    close_business_day(fresh_sessions, D1, config, after_each=undo_meanwhile)
    assert refused
    with fresh_sessions() as session:
        assert session.execute(select(func.count()).select_from(DriverDay).where(
            DriverDay.business_date == D1, DriverDay.closed_at.is_not(None))).scalar_one() == 2
    undo_close(fresh_sessions, D1, config, **WHO)  # once the close has finished


def test_undoing_a_close_keeps_a_reinstatement_made_since(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(instant_payouts=False)
    add(fresh_sessions, "D300009", "309")
    deposit(fresh_sessions, "D300009", 250_000)
    for day in (D1, D2, D3):
        close_business_day(fresh_sessions, day, config)
    with fresh_sessions.begin() as session:
        reinstate(session, "D300009", business_date=D4, operator="amina", reason="forgiven")
    with fresh_sessions.begin() as session:  # the vehicle given back by hand
        fleet.assign(session, driver_code="D300009", vehicle_code="309", substitute=False)
    undo_close(fresh_sessions, D3, config, operator="bob", reason="fixing another driver")
    close_business_day(fresh_sessions, D3, config)  # closed again: one miss after the fresh start
    with fresh_sessions() as session:
        driver = session.execute(select(Driver).where(Driver.code == "D300009")).scalar_one()
        assert (driver.status, driver.consecutive_misses) == ("active", 1)
        assert session.execute(select(Vehicle.code).where(Vehicle.regular_driver_id == driver.id)).scalar_one() == "309"
        assert session.execute(select(Payout.state).where(Payout.cause_key.like("refund:D300009%"))).scalars().all() == ["failed"]
    assert_books_reconcile(fresh_sessions)


def test_a_freed_vehicle_someone_else_drives_now_is_not_taken_back(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings().model_copy(update={"termination_misses": 1})
    add(fresh_sessions, "D300010", "310")
    add(fresh_sessions, "D300011", None, msisdn="254700000003")
    close_business_day(fresh_sessions, D1, config)  # D300010 flagged, 310 freed
    with fresh_sessions.begin() as session:
        fleet.assign(session, driver_code="D300011", vehicle_code="310", substitute=False)
    summary = undo_close(fresh_sessions, D1, config, **WHO)
    assert summary.vehicles_taken == ["310"] and summary.vehicles_returned == []
    with fresh_sessions() as session:
        assert session.execute(select(Driver.code).join(Vehicle, Vehicle.regular_driver_id == Driver.id)
                               .where(Vehicle.code == "310")).scalar_one() == "D300011"


def test_assigning_a_vehicle_does_not_wait_for_a_driver_s_money_lock(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """The driver lock serialises money decisions; a vehicle assignment only needs the driver to
    exist (a foreign-key check), so it must not wait for it: that wait deadlocked with an undo
    holding the driver and waiting for the vehicle."""
    from sqlalchemy import text

    driver_id = add(fresh_sessions, "D300012", None)
    with fresh_sessions.begin() as session:
        fleet.add_vehicle(session, "312")
    holder = fresh_sessions()
    holder.begin()
    fleet.lock_driver(holder, driver_id)
    with fresh_sessions.begin() as session:
        session.execute(text("SET LOCAL lock_timeout = '500ms'"))
        fleet.assign(session, driver_code="D300012", vehicle_code="312", substitute=False)
    holder.rollback()
    holder.close()
