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


def overpaid_driver_with_held_payout(sessions):  # type: ignore[no-untyped-def]
    """D900001: P1 failed, paid again as P2 (not sent yet), then P1 proven paid after all: the
    driver owes 5,000 cents, and P2 is held for an operator (``held:overpayment_risk``)."""
    from money.payouts import apply_event, create_payout
    from tests.books.test_payout_races import funded_payout

    p1 = funded_payout(sessions)
    with sessions.begin() as session:
        apply_event(session, p1.id, "result_failure")
        apply_event(session, p1.id, "status_failed")
    with sessions.begin() as session:
        p2_id = create_payout(session, driver=fleet.lock_driver(session, p1.driver_id), amount_cents=5_000,
                              cause_key=f"retry:{p1.id}", business_date=D1).id
    with sessions.begin() as session:
        apply_event(session, p1.id, "status_paid")
    with sessions() as session:
        assert "held:overpayment_risk" in session.get(Payout, p2_id).review_reason
    return p2_id


def test_a_payout_held_for_an_overpayment_is_not_released_while_the_driver_owes(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    held = overpaid_driver_with_held_payout(fresh_sessions)
    assert balances(fresh_sessions, "D900001")[0] == -5_000
    with fresh_sessions.begin() as session, pytest.raises(PayoutError, match="owes 5000 cents"):
        approve(session, held, operator="amina")  # it would pay the same 50 KES again
    with fresh_sessions.begin() as session:
        withdraw_payout(session, held, operator="amina", reason="repays the overpayment", business_date=D1)
    assert balances(fresh_sessions, "D900001")[0] == 0  # its money repaid the debt
    assert_books_reconcile(fresh_sessions)


def test_a_refund_repays_what_the_driver_owes_first(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    overpaid_driver_with_held_payout(fresh_sessions)
    deposit(fresh_sessions, "D900001", 10_000)
    with fresh_sessions.begin() as session:
        document = refund(session, "D900001", None, settings(), operator="amina", reason="leaving", business_date=D1)
    assert document["kept_for_debt_cents"] == 5_000
    with fresh_sessions() as session:
        assert [session.get(Payout, p).amount_cents for p in document["payouts"]] == [5_000]
    assert balances(fresh_sessions, "D900001") == (0, 0)  # the debt repaid, the rest on its way
    assert_books_reconcile(fresh_sessions)


def forged_success(session, payout: Payout):  # type: ignore[no-untyped-def]
    """A B2C success naming a payout's id, amount and a masked receiver, as a forger who learnt the
    id would send it."""
    import json

    from db.models import Inbox
    from money.payout_results import b2c_result
    from tests.support import SAMPLES

    body = json.loads((SAMPLES / "b2c_result_success.json").read_text())
    body["Result"]["OriginatorConversationID"] = payout.originator_conversation_id
    body["Result"]["ConversationID"] = "AG_forged"
    for parameter in body["Result"]["ResultParameters"]["ResultParameter"]:
        if parameter["Key"] == "TransactionAmount":
            parameter["Value"] = payout.amount_cents // 100
        if parameter["Key"] == "ReceiverPartyPublicName":
            parameter["Value"] = "2547*****001 - X"
    row = Inbox(kind="b2c_result", external_id=f"{payout.originator_conversation_id}#forged", body=json.dumps(body))
    session.add(row)
    session.flush()
    return b2c_result(session, row, body, settings())


@pytest.mark.parametrize("withdrawn", [False, True])
def test_no_result_moves_a_payout_never_sent(fresh_sessions, withdrawn: bool) -> None:  # type: ignore[no-untyped-def]
    add(fresh_sessions, "D400004", "404")
    deposit(fresh_sessions, "D400004", 10_000)
    with fresh_sessions.begin() as session:
        [payout_id] = refund(session, "D400004", None, settings(), operator="amina", reason="leaving", business_date=D1)["payouts"]
    if withdrawn:
        with fresh_sessions.begin() as session:
            withdraw_payout(session, payout_id, operator="bob", reason="stays", business_date=D1)
    before = balances(fresh_sessions, "D400004")
    with fresh_sessions.begin() as session:
        applied = forged_success(session, session.get(Payout, payout_id))
    assert applied.reason == "review:result_for_a_payout_never_sent"
    with fresh_sessions() as session:
        payout = session.get(Payout, payout_id)
        assert payout.state == ("failed" if withdrawn else "pending")
        assert "result_for_a_payout_never_sent" in payout.review_reason
    assert balances(fresh_sessions, "D400004") == before
    assert_books_reconcile(fresh_sessions)


def test_a_withdrawn_payout_is_not_retried(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from money.payouts import retry_failed

    add(fresh_sessions, "D400005", "405")
    deposit(fresh_sessions, "D400005", 10_000)
    with fresh_sessions.begin() as session:
        [payout_id] = refund(session, "D400005", None, settings(), operator="amina", reason="leaving", business_date=D1)["payouts"]
    with fresh_sessions.begin() as session:
        withdraw_payout(session, payout_id, operator="bob", reason="stays", business_date=D1)
    with fresh_sessions.begin() as session, pytest.raises(PayoutError, match="withdrawn by a person"):
        retry_failed(session, payout_id, settings(), business_date=D1, operator="bob")


@pytest.mark.parametrize("lookalike", ["amina\u200b", "\u0430mina", "\uff41\uff4d\uff49\uff4e\uff41", " AMINA "])
def test_four_eyes_are_not_passed_by_a_lookalike_name(fresh_sessions, lookalike: str) -> None:  # type: ignore[no-untyped-def]
    from fleetpay.people import BadName

    add(fresh_sessions, "D400006", "406")
    deposit(fresh_sessions, "D400006", 10_000)
    with fresh_sessions.begin() as session:
        [payout_id] = refund(session, "D400006", None, settings(), operator="amina", reason="leaving", business_date=D1)["payouts"]
    with fresh_sessions.begin() as session, pytest.raises((PayoutError, BadName)):
        approve(session, payout_id, operator=lookalike)
