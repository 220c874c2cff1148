"""The SMS outbox: each money event that concerns a driver writes its notice once, in the same
transaction; a notice is sent at most once (twice only when the provider's answer was lost), with
the same words every time; what is off, opted out or unconfigured is kept as skipped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db import fleet
from db.models import Driver, Notification
from db.notifications import stale_sends, take_due
from fleetpay.settings import Settings
from money import notices
from money.daily_close import close_business_day
from money.payouts import apply_event
from schemas.africas_talking import SendAnswer
from tests.books.test_daily_close import D1, D2, D3, add, pay_fare
from tests.books.test_daily_close import settings as close_settings
from tests.books.test_payout_races import funded_payout

SENT = SendAnswer("sent", "101 Success", "ATXid_1")


def config(**changes: object) -> Settings:
    return Settings(**{"database_url": "postgresql://unused/x", "sms_api_key": "test-key", **changes})


def notices_of(sessions, kind: str | None = None) -> list[Notification]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        query = select(Notification).order_by(Notification.id)
        if kind:
            query = query.where(Notification.kind == kind)
        return list(session.execute(query).scalars())


def test_a_payment_writes_its_notice_once_with_the_days_progress(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    setup = close_settings()
    add(fresh_sessions, "D100001", "101")
    pay_fare(fresh_sessions, setup, "101", "TK00000001", 40_000, D1)
    pay_fare(fresh_sessions, setup, "101", "TK00000001", 40_000, D1)  # redelivered: no second posting, no notice
    pay_fare(fresh_sessions, setup, "101", "TK00000002", 30_000, D1)
    written = notices_of(fresh_sessions, "payment")
    assert [n.subject for n in written] == ["c2b:TK00000001", "c2b:TK00000002"]
    assert written[1].facts == {"amount_cents": 30_000, "receipt": "TK00000002", "vehicle": None,
                                "contributed_cents": 35_000, "target_cents": 100_000, "share_cents": 15_000}
    assert {n.state for n in written} == {"pending"}


def test_a_payout_paid_and_a_payout_delayed_are_each_told_once(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")  # failure reported: in doubt until our query answers
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "mismatch", review_reason="receiver_differs")  # still the same delay
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_success", receipt="TK7PAID001")
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "status_paid", receipt="TK7PAID001")  # paid absorbs it
    delayed, paid = notices_of(fresh_sessions)
    assert [(n.kind, n.subject, n.facts) for n in (delayed, paid)] == [
        ("payout_delayed", str(payout.id), {"amount_cents": 5_000}),
        ("payout_paid", str(payout.id), {"amount_cents": 5_000, "receipt": "TK7PAID001"}),
    ]
    with fresh_sessions.begin() as session:  # the delay is told only if it lasts: not due yet
        assert take_due(session, redo_after_s=60, limit=10) == [paid.id]
        session.execute(update(Notification).where(Notification.id == delayed.id).values(next_attempt_at=func.now()))
        assert take_due(session, redo_after_s=60, limit=10) == [delayed.id]
    with fresh_sessions.begin() as session:  # paid meanwhile: the driver is not told it is late
        assert notices.prepare(session, delayed.id, config()) is None
    assert notices_of(fresh_sessions, "payout_delayed")[0].last_error == "no_longer_delayed"


def test_a_forged_receipt_never_reaches_a_driver(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_success", receipt="ABC. Call 0700000000 to confirm your PIN")
    (paid,) = notices_of(fresh_sessions, "payout_paid")
    assert paid.facts == {"amount_cents": 5_000, "receipt": ""}


def test_the_close_sends_a_summary_and_warns_one_miss_before_termination(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    setup = close_settings()  # three misses in a row end a contract
    add(fresh_sessions, "D100002", "102")
    add(fresh_sessions, "D100003", "103", substitute=True)  # a substitute's day is paused: no summary
    pay_fare(fresh_sessions, setup, "102", "TK00000003", 60_000, D1)
    close_business_day(fresh_sessions, D1, setup)
    close_business_day(fresh_sessions, D1, setup)  # run again: nothing new
    summaries = notices_of(fresh_sessions, "daily_summary")
    assert [(n.subject, n.facts) for n in summaries] == [("close:D100002:2026-11-20", {
        "business_date": "2026-11-20", "contributed_cents": 30_000, "target_cents": 100_000, "met": False,
        "carried_cents": 70_000, "misses": 1, "misses_max": 3})]
    assert notices_of(fresh_sessions, "termination_warning") == []
    close_business_day(fresh_sessions, D2, setup)  # the second miss: one more ends the contract
    assert [n.facts for n in notices_of(fresh_sessions, "termination_warning")] == [{"misses": 2}]
    close_business_day(fresh_sessions, D3, setup)  # the third ends it: a summary, no second warning
    assert len(notices_of(fresh_sessions, "termination_warning")) == 1
    assert len(notices_of(fresh_sessions, "daily_summary")) == 3


def pending_notice(sessions, kind: str = "payment") -> int:  # type: ignore[no-untyped-def]
    setup = close_settings()
    add(sessions, "D100004", "104", msisdn="254711000004")
    pay_fare(sessions, setup, "104", "TK00000004", 50_000, D1)
    (notice,) = notices_of(sessions, "payment")
    if kind != "payment":
        with sessions.begin() as session:
            session.execute(update(Notification).values(kind=kind, facts={"amount_cents": 5_000, "receipt": "TK7"}))
    return notice.id


def test_a_notice_is_sent_once_with_the_same_words_however_often_it_is_claimed(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    notice_id = pending_notice(fresh_sessions)
    with fresh_sessions.begin() as session:
        first = notices.prepare(session, notice_id, config())
    assert first is not None and first.to == "+254711000004" and first.attempt == 1
    assert first.message.startswith("fleetpay: KES 500 received, TK00000004")
    with fresh_sessions.begin() as session:
        assert notices.prepare(session, notice_id, config()) is None  # claimed: a second worker sends nothing
    with fresh_sessions.begin() as session:  # the gateway refused it (HTTP 500): nothing went out
        assert notices.record_answer(session, notice_id, SendAnswer("not_sent", "HTTP 503"), attempt=1) == notices.RETRY
    with fresh_sessions.begin() as session:  # the driver's language changed meanwhile: the text does not
        session.execute(update(Driver).values(language="sw"))
        again = notices.prepare(session, notice_id, config())
    assert again is not None and again.message == first.message and again.attempt == 2
    with fresh_sessions.begin() as session:
        assert notices.record_answer(session, notice_id, SENT, attempt=1) == "sending"  # the first attempt's, late: nothing
        assert notices.record_answer(session, notice_id, SENT, attempt=2) == "sent"
        assert notices.record_answer(session, notice_id, SENT, attempt=2) == "sent"  # a duplicate changes nothing
        assert notices.prepare(session, notice_id, config()) is None
    (sent,) = notices_of(fresh_sessions)
    assert (sent.state, sent.segments, sent.provider_message_id, sent.attempts) == ("sent", 1, "ATXid_1", 2)


def test_a_lost_answer_is_sent_once_more_and_a_second_loss_is_never_sent_again(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    notice_id = pending_notice(fresh_sessions)
    with fresh_sessions.begin() as session:
        notices.prepare(session, notice_id, config())
        assert notices.record_answer(session, notice_id, None, attempt=1, error="ReadTimeout") == notices.RETRY
    with fresh_sessions.begin() as session:
        assert notices.prepare(session, notice_id, config()) is not None
    with fresh_sessions.begin() as session:  # the worker died mid-send: judged stale by the sweep
        session.execute(update(Notification).values(claimed_at=func.now() - timedelta(minutes=5)))
    with fresh_sessions() as session:
        assert stale_sends(session, older_than_s=120, limit=10) == [(notice_id, 2)]
    with fresh_sessions.begin() as session:
        assert notices.give_up_stale_send(session, notice_id, 1) == "sending"  # an older claim's: nothing
        assert notices.give_up_stale_send(session, notice_id, 2) == "unknown"
        assert notices.prepare(session, notice_id, config()) is None
    (notice,) = notices_of(fresh_sessions)
    assert (notice.state, notice.answers_lost, notice.attempts) == ("unknown", 2, 2)


def test_a_number_the_provider_refuses_fails_for_good(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    notice_id = pending_notice(fresh_sessions)
    with fresh_sessions.begin() as session:
        notices.prepare(session, notice_id, config())
        assert notices.record_answer(session, notice_id, SendAnswer("refused", "406 UserInBlacklist"), attempt=1) == "failed"
    with fresh_sessions.begin() as session:
        assert take_due(session, redo_after_s=60, limit=10) == []


@pytest.mark.parametrize(("kind", "change", "setting", "reason"), [
    ("payment", {"sms_opt_out": True}, {}, "opted_out"),
    ("payment", {}, {"notify_payment": False}, "turned_off"),
    ("payment", {}, {"sms_enabled": False}, "turned_off"),
    ("payment", {"msisdn": "2547 ***** 149"}, {}, "no_usable_number"),
    ("payment", {}, {"sms_api_key": "sim-at-api-key"}, "FLEETPAY_SMS_API_KEY is the placeholder 'sim-at-api-key'"),
    ("payout_paid", {"sms_opt_out": True}, {}, None),  # a driver cannot opt out of being told they were paid
])
def test_what_is_not_sent_is_kept_with_the_reason(fresh_sessions, kind, change, setting, reason) -> None:  # type: ignore[no-untyped-def]
    notice_id = pending_notice(fresh_sessions, kind)
    with fresh_sessions.begin() as session:
        if change:
            session.execute(update(Driver).values(**change))
        prepared = notices.prepare(session, notice_id, config(**setting))
    (notice,) = notices_of(fresh_sessions)
    if reason is None:
        assert prepared is not None and notice.state == "sending"
    else:
        assert prepared is None and (notice.state, notice.last_error) == ("skipped", reason)


def test_the_placeholder_key_is_used_under_fleetpay_dev(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    notice_id = pending_notice(fresh_sessions)
    with fresh_sessions.begin() as session:
        assert notices.prepare(session, notice_id, config(sms_api_key="sim-at-api-key", dev_mode=True)) is not None


def test_the_sweep_takes_each_due_notice_once_per_wait(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    notice_id = pending_notice(fresh_sessions)
    with fresh_sessions.begin() as session:
        assert take_due(session, redo_after_s=60, limit=10) == [notice_id]
        assert take_due(session, redo_after_s=60, limit=10) == []
        session.execute(update(Notification).values(next_attempt_at=func.now()))
        assert take_due(session, redo_after_s=60, limit=10) == [notice_id]


def test_a_driver_paying_the_company_directly_is_told_too(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from db import ledger
    from money.payments import apply_payment

    add(fresh_sessions, "D100005", "105")
    with fresh_sessions.begin() as session:
        apply_payment(session, key="c2b:TK00000005", amount_cents=20_000, business_date=D1,
                      payee=fleet.payee_for_driver_code(session, "D100005"), settings=close_settings(),
                      source_account=ledger.system_accounts(session).mpesa)
    (notice,) = notices_of(fresh_sessions, "payment")
    assert notice.facts["share_cents"] == 0 and notice.facts["contributed_cents"] == 20_000


def test_a_delay_settled_between_two_attempts_is_not_told(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout = funded_payout(fresh_sessions)
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_failure")
    (delayed,) = notices_of(fresh_sessions, "payout_delayed")
    with fresh_sessions.begin() as session:
        assert notices.prepare(session, delayed.id, config()) is not None  # still in doubt: its text is made
        assert notices.record_answer(session, delayed.id, SendAnswer("not_sent", "HTTP 429"), attempt=1) == notices.RETRY
    with fresh_sessions.begin() as session:
        apply_event(session, payout.id, "result_success", receipt="TK7PAID002")
    with fresh_sessions.begin() as session:  # the retry finds it paid: "delayed" would now be false
        assert notices.prepare(session, delayed.id, config()) is None
    assert notices_of(fresh_sessions, "payout_delayed")[0].state == "skipped"


def test_a_refused_api_key_is_never_printed_back() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        Settings(sms_api_key="atsk_SUPERSECRETKEY\x01abc")
    assert "SUPERSECRET" not in str(refused.value)
    assert Settings(sms_api_key="atsk_key_from_a_file\n").sms_api_key.get_secret_value() == "atsk_key_from_a_file"
