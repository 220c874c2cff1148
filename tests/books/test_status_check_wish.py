"""A status query a person asked for (an approved ``payout_resolve``) is remembered on the payout:
the sweep asks until Daraja takes one, even for a payout in review or past the query limit, and
whatever became of the message that asks at once; a definite refusal ends the wish."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, update

from db.models import Payout
from db.payouts import payout_detail, take_status_checks_due
from money.payouts import (
    apply_event,
    record_status_query,
    status_query_refused,
    take_status_check,
    want_status_check,
)
from tests.books.test_payout_races import funded_payout

SWEEP = {"submitted_older_than_s": 3600, "interval_s": 60, "backoff_max_s": 3600, "queries_max": 3, "limit": 10}


def due(sessions) -> list[int]:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        return take_status_checks_due(session, **SWEEP)


def in_review(sessions) -> int:  # type: ignore[no-untyped-def]
    """A payout the sweep never asks about by itself: in review, its queries used up."""
    payout = funded_payout(sessions)
    with sessions.begin() as session:
        apply_event(session, payout.id, "mismatch", review_reason="receiver_differs")
        session.execute(update(Payout).where(Payout.id == payout.id).values(status_queries=3, status_checked_at=None))
    return payout.id


def test_a_payout_in_review_is_asked_about_only_once_a_person_wants_it_and_until_daraja_takes_a_query(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout_id = in_review(fresh_sessions)
    assert due(fresh_sessions) == []
    with fresh_sessions.begin() as session:
        want_status_check(session, payout_id)
    assert due(fresh_sessions) == []  # the message sent with the approval asks; the sweep only backs it up
    with fresh_sessions.begin() as session:  # that message was lost: a minute later the sweep asks
        session.execute(update(Payout).where(Payout.id == payout_id).values(status_checked_at=func.now() - timedelta(seconds=61)))
    assert due(fresh_sessions) == [payout_id]
    assert due(fresh_sessions) == []  # taken: not again within the interval
    with fresh_sessions.begin() as session:  # Daraja did not take it, for an hour: the next try waits half an hour
        session.execute(update(Payout).where(Payout.id == payout_id).values(
            status_check_wanted_at=func.now() - timedelta(hours=1), status_checked_at=func.now() - timedelta(minutes=20)))
    assert due(fresh_sessions) == []
    with fresh_sessions.begin() as session:
        session.execute(update(Payout).where(Payout.id == payout_id).values(status_checked_at=func.now() - timedelta(minutes=31)))
    assert due(fresh_sessions) == [payout_id]
    with fresh_sessions.begin() as session:
        assert take_status_check(session, payout_id)  # the message that asks at once
        record_status_query(session, payout_id, "AG_wish_taken")
        session.execute(update(Payout).where(Payout.id == payout_id).values(status_checked_at=None))
    assert due(fresh_sessions) == []  # Daraja took one: the wish is met
    with fresh_sessions() as session:
        detail = payout_detail(session, payout_id)
    assert detail is not None
    assert (detail["state"], detail["status_check_wanted"], [q["query_id"] for q in detail["queries"]]) == (
        "review", False, ["AG_wish_taken"])


def test_a_query_daraja_refuses_for_good_ends_the_wish(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout_id = in_review(fresh_sessions)
    with fresh_sessions.begin() as session:
        want_status_check(session, payout_id)
        status_query_refused(session, payout_id, "2001")
        session.execute(update(Payout).where(Payout.id == payout_id).values(status_checked_at=None))
    assert due(fresh_sessions) == []
    with fresh_sessions() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None
        assert (payout.state, payout.status_check_wanted_at) == ("review", None)
        assert "status_query_refused:2001" in (payout.review_reason or "")


@pytest.mark.parametrize("event", ["result_success", "status_failed", "status_not_found"])
def test_a_wish_ends_when_the_payout_leaves_doubt_and_does_not_come_back_with_a_reopening(fresh_sessions, event) -> None:  # type: ignore[no-untyped-def]
    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")  # failure_reported: in doubt
        want_status_check(session, payout.id)
        apply_event(session, payout.id, event, receipt="SKR1234567" if event == "result_success" else None)
        assert session.get(Payout, payout.id).status_check_wanted_at is None  # paid, failed, or pending (sent again)
    assert due(fresh_sessions) == []
    if event == "status_failed":
        with fresh_sessions.begin() as session:  # a success callback reopens it: asked about as usual, not as wished
            assert apply_event(session, payout.id, "result_success").new_state == "reopened"
            assert session.get(Payout, payout.id).status_check_wanted_at is None
    if event == "result_success":
        with fresh_sessions.begin() as session, pytest.raises(ValueError, match="need resolving"):
            want_status_check(session, payout.id)


def test_an_unknown_payout_cannot_be_wanted(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session, pytest.raises(ValueError, match="no payout 987654321"):
        want_status_check(session, 987654321)
