"""Payout decisions under concurrency and after a confirmed failure, on the money layer directly
(``money.payouts.apply_event``) against real PostgreSQL."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import select

from db import fleet, ledger
from db.models import Payout, Posting
from db.payouts import payout_by_originator_id
from fleetpay.settings import Settings
from money.payouts import apply_event, claim, create_payout, reserve_payable
from tests.support import add_driver_with_vehicle

DAY = date(2026, 11, 30)
EAT = ZoneInfo("Africa/Nairobi")


def funded_payout(sessions, amount_cents: int = 5_000) -> Payout:  # type: ignore[no-untyped-def]
    """A driver owed ``amount_cents`` and a payout of it, sent and accepted."""
    with sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D900001", vehicle_code="901", msisdn="254722000901")
        driver = fleet.get_driver(session, "D900001")
        ledger.post(session, key="seed:1", kind="fare", business_date=DAY, driver_id=driver.id,
                    legs=[(ledger.system_accounts(session).mpesa, -amount_cents),
                          (ledger.driver_accounts(session, driver.id).payable, amount_cents)])
        payout = create_payout(session, driver=fleet.lock_driver(session, driver.id), amount_cents=amount_cents,
                               cause_key="share:seed:1", business_date=DAY)
        payout_id = payout.id
    with sessions.begin() as session:
        claim(session, payout_id)
        apply_event(session, payout_id, "accepted")
    with sessions() as session:
        return session.get(Payout, payout_id)


def postings_of(sessions, payout_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return sorted(session.execute(select(Posting.kind).where(Posting.payout_id == payout_id)).scalars())


def payable(sessions, driver_id: int) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).payable)


def test_a_payout_loaded_before_the_lock_is_decided_on_what_committed_meanwhile(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """Two results for one payout at once: A has loaded the payout (a handler finds it by its id
    first) when B confirms the failure and commits; A's success must see ``failed``, not the stale
    ``failure_reported``, so the money is never both released and paid from flight."""
    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")
    first = fresh_sessions()
    first.begin()
    stale = payout_by_originator_id(first, payout.originator_conversation_id)
    assert stale is not None and stale.state == "failure_reported"
    with fresh_sessions.begin() as second:
        apply_event(second, payout.id, "status_failed")  # committed while ``first`` holds a stale copy
    moved = apply_event(first, payout.id, "status_paid")
    first.commit()
    first.close()
    assert moved.new_state == "paid"
    assert postings_of(fresh_sessions, payout.id) == ["payout_failed", "payout_paid_after_failure", "payout_reserve"]
    assert payable(fresh_sessions, payout.driver_id) == 0  # released, then booked paid from payable


def test_a_paid_payout_is_not_reopened_by_a_failure_loaded_before_the_lock(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout = funded_payout(fresh_sessions)
    first = fresh_sessions()
    first.begin()
    assert payout_by_originator_id(first, payout.originator_conversation_id).state == "submitted"
    with fresh_sessions.begin() as second:
        apply_event(second, payout.id, "result_success")
    moved = apply_event(first, payout.id, "result_failure")
    first.commit()
    first.close()
    assert (moved.new_state, moved.changed) == ("paid", False)
    assert postings_of(fresh_sessions, payout.id) == ["payout_paid", "payout_reserve"]


def test_paid_after_a_confirmed_failure_and_a_repayment_is_an_overpayment_that_holds_pending_payouts(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")
        apply_event(session, payout.id, "status_failed")
    assert payable(fresh_sessions, payout.driver_id) == 5_000
    with fresh_sessions.begin() as session:  # paid again: the money goes out once more
        again = create_payout(session, driver=fleet.lock_driver(session, payout.driver_id), amount_cents=5_000,
                              cause_key=f"retry:{payout.id}", business_date=DAY)
        again_id = again.id
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "status_paid")  # M-Pesa did pay the first one after all
    with fresh_sessions() as session:
        first, second = session.get(Payout, payout.id), session.get(Payout, again_id)
        assert (first.state, first.review_reason) == ("paid", "overpaid:5000")
        assert (second.state, second.requires_approval, second.review_reason) == ("pending", True, "held:overpayment_risk")
    assert payable(fresh_sessions, payout.driver_id) == -5_000
    with fresh_sessions.begin() as session:  # the next share pays the debt back before anything goes out
        assert reserve_payable(session, fleet.lock_driver(session, payout.driver_id), settings,
                               cause_key="share:later", business_date=DAY) == []


def test_reconciliation_shows_a_payment_mpesa_reported_that_the_books_do_not_show(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """M-Pesa's B2C result says it paid a payout the books show failed, and no answer to a query of
    ours came after it: money left without the books knowing (whatever step missed it)."""
    import json

    from db.models import Inbox
    from db.reconcile import check
    from tests.support import SAMPLES

    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")
        apply_event(session, payout.id, "status_failed")
        body = json.loads((SAMPLES / "b2c_result_success.json").read_text())
        body["Result"]["OriginatorConversationID"] = payout.originator_conversation_id
        session.add(Inbox(kind="b2c_result", external_id=f"{payout.originator_conversation_id}#x", body=json.dumps(body),
                          status="processed", reason="no_change:failed"))
    with fresh_sessions() as session:
        found = check(session.connection())
    assert [(d.kind, d.subject, d.expected_cents, d.actual_cents) for d in found] == [
        ("mpesa_paid_unbooked", str(payout.id), 10_000, 0)]


def test_status_query_backoff_does_not_overflow_after_many_queries(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from db.payouts import status_exhausted, take_status_checks_due

    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")
        session.execute(update(Payout).where(Payout.id == payout.id).values(status_queries=60, status_checked_at=None))
    with fresh_sessions.begin() as session:
        due = take_status_checks_due(session, submitted_older_than_s=60, interval_s=60, backoff_max_s=3600,
                                     queries_max=1000, limit=10)
    assert due == [payout.id]
    with fresh_sessions() as session:
        assert status_exhausted(session, queries_max=12, interval_s=0, submitted_older_than_s=60, limit=10) == [(payout.id, 60)]


def test_an_account_balance_answer_is_believed_once_and_never_from_the_future(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    import json
    from datetime import datetime

    from db.models import FloatObservation, Inbox
    from fleetpay.settings import Settings
    from money.float_check import balance_result, record_float_query
    from tests.support import SAMPLES

    body = json.loads((SAMPLES / "account_balance_result.json").read_text())
    query = body["Result"]["OriginatorConversationID"]
    outcomes = []
    for completed in ("20200324200441", "20990101000000", "20200324200442"):
        if completed != "20200324200442":  # the third answer names a query already answered
            with fresh_sessions.begin() as session:
                record_float_query(session, query)
        for param in body["Result"]["ResultParameters"]["ResultParameter"]:
            if param["Key"] == "BOCompletedTime":
                param["Value"] = completed
        with fresh_sessions.begin() as session:
            row = Inbox(kind="balance_result", external_id=f"{query}#{completed}", body=json.dumps(body),
                        received_at=datetime.now(EAT))
            session.add(row)
            session.flush()
            applied = balance_result(session, row, body, Settings())
            outcomes.append((applied.status, applied.reason))
    assert outcomes == [("processed", None), ("processed", "balance_from_the_future"), ("rejected", "unknown_query")]
    with fresh_sessions() as session:
        assert len(session.execute(select(FloatObservation)).all()) == 1


def test_recording_daraja_s_answer_takes_the_driver_lock_before_the_payout(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """One lock order everywhere (driver, then payout): the sender recording a ConversationID
    must not hold the payout while it waits for the driver, or a settlement holding the driver
    and waiting for the payout deadlocks with it."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from money.payouts import record_conversation_id

    payout = funded_payout(fresh_sessions)
    holder = fresh_sessions()
    holder.begin()
    fleet.lock_driver(holder, payout.driver_id)  # a settlement holds the driver
    recorder = fresh_sessions()
    recorder.begin()
    recorder.execute(text("SET LOCAL lock_timeout = '300ms'"))
    try:
        record_conversation_id(recorder, payout.id, "AG_lock_order")
        raise AssertionError("recorded while another transaction held the driver")
    except OperationalError:
        recorder.rollback()
    # The recorder waited for the driver holding nothing: the settlement can still take the payout.
    holder.execute(text("SET LOCAL lock_timeout = '300ms'"))
    holder.execute(select(Payout.id).where(Payout.id == payout.id).with_for_update()).one()
    holder.rollback()
    holder.close()
    recorder.close()
