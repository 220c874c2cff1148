"""Deposits moved by hand (``money.deposits``): through the ledger, never below zero, named, and
every refund approved by a second person."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from db import fleet, ledger
from db.models import OperatorAction, Payout
from money.deposits import DepositRefused, refund, top_up, withdraw_payout
from money.payouts import PayoutError, approve
from tests.books.test_close_undo import deposit
from tests.books.test_daily_close import D1, add, assert_books_reconcile, pay_fare, settings


def balances(sessions, code: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        accounts = ledger.driver_accounts(session, fleet.get_driver(session, code).id)
        return ledger.balance_cents(session, accounts.payable), ledger.balance_cents(session, accounts.deposit)


def test_a_top_up_is_kept_back_from_what_the_driver_is_owed(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(instant_payouts=False)
    add(fresh_sessions, "D400001", "401")
    pay_fare(fresh_sessions, config, "401", "T1", 100_000, D1)  # owed 500
    with fresh_sessions.begin() as session, pytest.raises(DepositRefused, match="less than"):
        top_up(session, "D400001", 60_000, operator="amina", reason="consented", business_date=D1)
    with fresh_sessions.begin() as session, pytest.raises(DepositRefused, match="whole shillings"):
        top_up(session, "D400001", 150, operator="amina", reason="consented", business_date=D1)
    with fresh_sessions.begin() as session:
        top_up(session, "D400001", 30_000, operator="amina", reason="consented", business_date=D1)
    assert balances(fresh_sessions, "D400001") == (20_000, 30_000)
    with fresh_sessions() as session:
        action = session.execute(select(OperatorAction)).scalar_one()
        assert (action.action, action.operator, action.reason) == ("deposit_topup", "amina", "consented")
    assert_books_reconcile(fresh_sessions)


def test_a_refund_waits_for_a_second_person_and_is_split_at_the_b2c_maximum(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings().model_copy(update={"b2c_maximum_cents": 100_000})
    add(fresh_sessions, "D400002", "402")
    deposit(fresh_sessions, "D400002", 250_050)
    with fresh_sessions.begin() as session, pytest.raises(DepositRefused, match="less than"):
        refund(session, "D400002", 300_000, config, operator="amina", reason="leaving", business_date=D1)
    with fresh_sessions.begin() as session:
        document = refund(session, "D400002", None, config, operator="amina", reason="leaving", business_date=D1)
    assert document["amount_cents"] == 250_000 and len(document["payouts"]) == 3  # 1,000 + 1,000 + 500
    with fresh_sessions() as session:
        held = session.execute(select(Payout.amount_cents, Payout.requires_approval, Payout.requested_by)
                               .order_by(Payout.id)).all()
    assert [tuple(row) for row in held] == [(100_000, True, "amina"), (100_000, True, "amina"), (50_000, True, "amina")]
    assert balances(fresh_sessions, "D400002") == (0, 50)  # cents stay: B2C pays shillings

    first, second, third = document["payouts"]
    with fresh_sessions.begin() as session, pytest.raises(PayoutError, match="four eyes"):
        approve(session, first, operator="Amina ")  # the same person, however typed
    with fresh_sessions.begin() as session:
        approve(session, first, operator="bob")
        approve(session, second, operator="bob")
    with fresh_sessions.begin() as session, pytest.raises(PayoutError, match="never sent"):
        withdraw_payout(session, first, operator="bob", reason="changed my mind", business_date=D1)  # released
    with fresh_sessions.begin() as session:
        withdraw_payout(session, third, operator="bob", reason="keep 500 for the damage", business_date=D1)
    assert balances(fresh_sessions, "D400002") == (0, 50_050)  # back into the deposit
    with fresh_sessions() as session:
        assert session.get(Payout, first).approved_by == "bob"
        assert session.get(Payout, third).state == "failed"
        actions = session.execute(select(OperatorAction.action, OperatorAction.operator).order_by(OperatorAction.id)).all()
    assert [tuple(a) for a in actions] == [("deposit_refund", "amina"), ("payout_approved", "bob"),
                                           ("payout_approved", "bob"), ("payout_withdrawn", "bob")]
    assert_books_reconcile(fresh_sessions)


def test_the_record_of_what_people_did_cannot_be_rewritten(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    add(fresh_sessions, "D400003", "403")
    deposit(fresh_sessions, "D400003", 10_000)
    with fresh_sessions.begin() as session:
        refund(session, "D400003", None, settings(), operator="amina", reason="leaving", business_date=D1)
    with pytest.raises(Exception, match="append-only"), fresh_sessions.begin() as session:
        session.execute(text("UPDATE operator_actions SET operator = 'nobody'"))
    with pytest.raises(Exception, match="append-only"), fresh_sessions.begin() as session:
        session.execute(text("DELETE FROM operator_actions"))
