"""Four eyes on the movements that run in transactions of their own (``money.requests.STAGED``):
undoing a close and fixing the books. A request is about exactly what its approver saw: the close
it names, the discrepancies it lists; what changed since is refused or left alone."""

from __future__ import annotations

import threading

from sqlalchemy import select, text

from db import fleet, ledger
from db.models import DailyClose, MoneyRequest, OperatorAction
from db.reconcile import check
from db.users import add_user
from money.close_undo import undo_close
from money.daily_close import close_business_day
from money.requests import Asker, RequestRefused, settle, submit
from tests.books.test_daily_close import D1, add, driver_state, settings

ASKER, APPROVER = Asker("amina", "operator"), Asker("bob", "approver")


def people(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        add_user(session, "amina", "operator", "a long enough password")
        add_user(session, "bob", "approver", "another long password")


def corrupt(sessions, code: str, kind: str, cents: int) -> None:  # type: ignore[no-untyped-def]
    """What manual SQL does: a cached balance that is not the sum of its entries."""
    with sessions.begin() as session:
        account = getattr(ledger.driver_accounts(session, fleet.get_driver(session, code).id), kind)
        session.execute(text("UPDATE accounts SET balance_cents = balance_cents + :c WHERE id = :a"), {"c": cents, "a": account})


def found(sessions) -> list[str]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return sorted(d.key for d in check(session.connection()))


def test_an_undo_asked_for_one_close_never_undoes_the_next(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    people(fresh_sessions)
    add(fresh_sessions, "D510001", "511")
    close_business_day(fresh_sessions, D1, config)
    asked = submit(fresh_sessions, "close_undo", {"date": D1.isoformat()}, asker=ASKER, reason="too early", settings=config,
                   business_date=D1)
    assert asked.state == "pending" and asked.params["drivers"] == 1
    # Meanwhile someone undoes that close another way, and the day is closed again: a new close.
    undo_close(fresh_sessions, D1, config, operator="carol", reason="undone from a script")
    close_business_day(fresh_sessions, D1, config)
    decided = settle(fresh_sessions, asked.id, approver=APPROVER, approve_it=True, settings=config, business_date=D1)
    assert decided.state == "failed" and "is not the one there now" in decided.outcome["error"]
    with fresh_sessions() as session:
        assert session.get(DailyClose, D1) is not None  # the new close stands
    assert driver_state(fresh_sessions, "D510001")[1] == 1


def test_a_fix_corrects_what_its_approver_saw_and_nothing_found_since(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    people(fresh_sessions)
    add(fresh_sessions, "D510002", "512")
    corrupt(fresh_sessions, "D510002", "target", 700)
    asked = submit(fresh_sessions, "reconcile_fix", {}, asker=ASKER, reason="manual SQL", settings=config, business_date=D1)
    assert asked.params["discrepancies"] == found(fresh_sessions) and len(found(fresh_sessions)) == 1
    corrupt(fresh_sessions, "D510002", "deposit", 300)  # after it was asked: not what the approver saw
    decided = settle(fresh_sessions, asked.id, approver=APPROVER, approve_it=True, settings=config, business_date=D1)
    assert (decided.state, decided.outcome["fixed"]) == ("done", 1)
    assert [key.split(":")[2] for key in found(fresh_sessions)] == ["deposit"]
    with fresh_sessions() as session:
        reason = session.execute(text("SELECT reason FROM reconciliation_fixes")).scalar_one()
    assert reason == f"manual SQL (request {asked.id}, approved by bob)"


def test_with_four_eyes_off_an_undo_runs_when_asked_and_says_nobody_checked(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(four_eyes=False)
    people(fresh_sessions)
    add(fresh_sessions, "D510003", "513")
    close_business_day(fresh_sessions, D1, config)
    done = submit(fresh_sessions, "close_undo", {"date": D1.isoformat()}, asker=ASKER, reason="too early", settings=config,
                  business_date=D1)
    assert (done.state, done.outcome["reopened"]) == ("done", 1)
    assert driver_state(fresh_sessions, "D510003")[1] == 0
    with fresh_sessions() as session:
        actions = session.execute(select(OperatorAction.action, OperatorAction.reason).order_by(OperatorAction.id)).all()
    assert ("money_request_ran_alone", "four eyes off: no second person") in actions


def test_two_people_asking_the_same_undo_at_once_make_one_request(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings()
    people(fresh_sessions)
    with fresh_sessions.begin() as session:
        add_user(session, "carol", "operator", "a third long password")
    add(fresh_sessions, "D510004", "514")
    close_business_day(fresh_sessions, D1, config)
    start, outcomes = threading.Barrier(2), []

    def ask(who: Asker) -> None:
        start.wait()
        try:
            outcomes.append(submit(fresh_sessions, "close_undo", {"date": D1.isoformat()}, asker=who, reason="twice",
                                   settings=config, business_date=D1).state)
        except RequestRefused as refused:
            outcomes.append(str(refused))

    threads = [threading.Thread(target=ask, args=(who,)) for who in (ASKER, Asker("carol", "operator"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[0] == "pending" and "already waiting" in sorted(outcomes)[1]
    with fresh_sessions() as session:
        assert len(session.execute(select(MoneyRequest.id)).all()) == 1


def test_a_fix_approved_still_corrects_a_balance_that_moved_since_and_says_what_it_left(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from tests.books.test_daily_close import pay_fare

    config = settings()
    people(fresh_sessions)
    add(fresh_sessions, "D510005", "515")
    corrupt(fresh_sessions, "D510005", "deposit", 700)
    corrupt(fresh_sessions, "D510005", "target", 900)
    asked = submit(fresh_sessions, "reconcile_fix", {}, asker=ASKER, reason="manual SQL", settings=config, business_date=D1)
    pay_fare(fresh_sessions, config, "515", "F1", 10_000, D1)  # the balances move; what is wrong does not
    corrupt(fresh_sessions, "D510005", "target", 100)  # but this one is now wrong by another amount
    decided = settle(fresh_sessions, asked.id, approver=APPROVER, approve_it=True, settings=config, business_date=D1)
    assert decided.state == "failed" and decided.outcome["error"].startswith("1 corrected")
    assert "target: +900 cents" in decided.outcome["error"]  # left alone, and said
    assert found(fresh_sessions) == ["cached_balance driver:D510005:target: +1000 cents"]


def test_with_four_eyes_off_the_records_say_nobody_checked(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    config = settings(four_eyes=False)
    people(fresh_sessions)
    add(fresh_sessions, "D510006", "516")
    corrupt(fresh_sessions, "D510006", "target", 700)
    done = submit(fresh_sessions, "reconcile_fix", {}, asker=ASKER, reason="manual SQL", settings=config, business_date=D1)
    assert (done.state, done.outcome["fixed"]) == ("done", 1)
    with fresh_sessions() as session:
        reason = session.execute(text("SELECT reason FROM reconciliation_fixes")).scalar_one()
    assert reason == f"manual SQL (request {done.id}, run without a second person: four eyes off)"
