"""The notices a driver is owed: written with the money they describe, sent by ``workers.send_notification``.

This is an outbox. Each money operation that concerns a driver writes one ``notifications`` row
in its own transaction, keyed by the event (a payment's posting key, a payout's id, a closed
day), so the row exists exactly when the money moved, and a redelivered message writes nothing
more. Writing is one INSERT; nothing here sends, waits or can roll the money back.

Whether a notice is sent is decided when it is first sent (`prepare`): its kind turned off
(``FLEETPAY_NOTIFY_<KIND>``, or SMS off), an optional kind the driver opted out of, no usable number,
or no API key (the placeholder, outside `fleetpay dev`) make it ``skipped``, kept with the reason.
Otherwise its text is made once, in the driver's language, and kept: a second attempt sends the
same words.

After a send (`record_answer`): taken → ``sent``; refused for this number → ``failed``; surely not
sent → ``pending`` again (the caller retries with backoff, and a send that keeps failing ends as a
dead letter); the answer lost (a timeout after the request left, a worker dead mid-send) → sent
once more with the same text, and a second loss → ``unknown``, never sent again. So a driver gets
each notice at most once, or twice when the provider's answer to the first send was lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog
from sqlalchemy import func
from sqlalchemy.orm import Session

from db import notifications, payment_batch
from db.models import Driver, Notification, Payout
from fleetpay import notice_texts
from fleetpay.notice_texts import NoticeKind
from fleetpay.settings import Settings
from schemas.africas_talking import SendAnswer, parse_delivery_report
from schemas.parsing import normalise_msisdn

log = structlog.get_logger("fleetpay.notices")

_WRITTEN = "fleetpay_notices_written"
ANSWERS_LOST_MAX = 1  # the one resend allowed when the provider's answer was lost


def notify(session: Session, kind: NoticeKind, subject: str, driver_id: int, facts: dict[str, Any], *,
           after_s: int = 0) -> int | None:
    """Write the notice of one event in the caller's transaction; None if it was written before.
    ``after_s``: not to be sent before then (the notice sweep sends it; no message now)."""
    notification_id = notifications.add(session, kind=kind, subject=subject, driver_id=driver_id, facts=facts,
                                        after_s=after_s)
    if notification_id is not None and not after_s:
        session.info.setdefault(_WRITTEN, []).append(notification_id)
    return notification_id


def written(session: Session) -> tuple[int, ...]:
    """The notices this session's transaction wrote (to enqueue after its COMMIT)."""
    return tuple(session.info.pop(_WRITTEN, ()))


def payment_facts(*, key: str, amount_cents: int, vehicle_code: str | None, contributed_cents: int,
                  target_cents: int, share_cents: int) -> dict[str, Any]:
    """What a payment's notice says: the amount, its receipt, the day's progress, the share."""
    return {"amount_cents": amount_cents, "receipt": key.partition(":")[2], "vehicle": vehicle_code,
            "contributed_cents": contributed_cents, "target_cents": target_cents, "share_cents": share_cents}


def payment_applied(session: Session, *, key: str, driver_id: int, **facts: Any) -> None:
    notify(session, "payment", key, driver_id, payment_facts(key=key, **facts))


def payments_applied(session: Session, applied: Sequence[tuple[str, int, dict[str, Any]]], settings: Settings) -> None:
    """The notices of a batch of payments, (key, driver id, ``payment_facts``) each, in one
    statement. When none can be sent (``fleet_skip_reason``) they are written skipped, with the
    reason, as a send would find them: kept for the record, and no message for each."""
    skipped = fleet_skip_reason("payment", settings)
    written_ids = payment_batch.add_notices(
        session, [("payment", key, driver_id, facts) for key, driver_id, facts in applied], skipped=skipped)
    if skipped is None:
        session.info.setdefault(_WRITTEN, []).extend(written_ids)


# A payout whose outcome is not known yet: no answer to the send, a failure to confirm, review.
IN_DOUBT = frozenset({"unknown", "failure_reported", "review", "reopened"})
# Most doubts end within minutes (a status query answers): a payout still in doubt this long after
# it went into doubt is told about, and not before (`skip_reason` looks again when it is sent).
DELAYED_AFTER_S = 300


def payout_moved(session: Session, payout: Payout) -> None:
    """Paid: the amount and M-Pesa's receipt. Into doubt for the first time: that it is delayed
    and the money is safe, once per payout, if it is still in doubt ``DELAYED_AFTER_S`` later."""
    facts = {"amount_cents": payout.amount_cents}
    if payout.state == "paid":
        receipt = payout.receipt if notice_texts.is_receipt(payout.receipt) else ""
        notify(session, "payout_paid", str(payout.id), payout.driver_id, {**facts, "receipt": receipt})
    elif payout.state in IN_DOUBT:  # keyed by the payout: told once, however often it is in doubt
        notify(session, "payout_delayed", str(payout.id), payout.driver_id, facts, after_s=DELAYED_AFTER_S)


def day_closed(session: Session, driver: Driver, *, key: str, day: date, contributed_cents: int, target_cents: int,
               met: bool, carried_cents: int, misses: int, misses_max: int, paused: bool) -> None:
    """The day's summary (not for a paused day), and a warning when one more miss ends the contract."""
    if paused:
        return
    notify(session, "daily_summary", key, driver.id, {
        "business_date": day.isoformat(), "contributed_cents": contributed_cents, "target_cents": target_cents,
        "met": met, "carried_cents": carried_cents, "misses": misses, "misses_max": misses_max})
    if not met and misses == misses_max - 1:
        notify(session, "termination_warning", key, driver.id, {"misses": misses})


def deposit_refunded(session: Session, *, key: str, driver_id: int, amount_cents: int) -> None:
    if amount_cents > 0:
        notify(session, "deposit_refund", key, driver_id, {"amount_cents": amount_cents})


@dataclass(frozen=True)
class Prepared:
    """A notice claimed for one send: to whom, what (the same text on every attempt)."""

    notification_id: int
    kind: str
    to: str  # +2547XXXXXXXX
    message: str
    attempt: int


def skip_reason(row: Notification, driver: Driver, settings: Settings) -> str | None:
    if not settings.notice_on(row.kind):
        return "turned_off"
    if driver.sms_opt_out and row.kind in notice_texts.OPTIONAL_KINDS:
        return "opted_out"
    if normalise_msisdn(driver.msisdn) is None:
        return "no_usable_number"
    return no_longer_true(row) or settings.sms_refusal()


def fleet_skip_reason(kind: str, settings: Settings) -> str | None:
    """Why no notice of ``kind`` is sent to anybody with these settings (its kind is off, or SMS
    cannot be sent at all), or None: the part of ``skip_reason`` that needs no driver."""
    return "turned_off" if not settings.notice_on(kind) else settings.sms_refusal()


def no_longer_true(row: Notification) -> str | None:
    """A notice that has stopped being true by the time it is (re)sent: a payout told as delayed
    that was settled meanwhile. Looked at before every attempt: not sending is always safe."""
    if row.kind == "payout_delayed":
        payout = session_of(row).get(Payout, int(row.subject))
        if payout is None or payout.state not in IN_DOUBT:
            return "no_longer_delayed"
    return None


def session_of(row: Notification) -> Session:
    session = Session.object_session(row)
    assert session is not None
    return session


def prepare(session: Session, notification_id: int, settings: Settings) -> Prepared | None:
    """Claim a pending notice for one send, making its text the first time; None when there is
    nothing to send (not pending, or skipped now)."""
    row = notifications.claim(session, notification_id)
    if row is None:
        return None
    if row.message is None:
        driver = session.get(Driver, row.driver_id)
        assert driver is not None
        if (reason := skip_reason(row, driver, settings)) is not None:
            row.state, row.last_error = "skipped", reason
            log.info("notice_skipped", notification_id=row.id, kind=row.kind, reason=reason)
            return None
        language = driver.language or settings.sms_default_language
        row.language, row.msisdn = language, "+" + str(normalise_msisdn(driver.msisdn))
        row.message = notice_texts.compose(row.kind, row.facts, language)  # type: ignore[arg-type]
        row.segments = notice_texts.segments(row.message)
    elif (reason := no_longer_true(row)) is not None:
        row.state, row.last_error = "skipped", reason
        log.info("notice_skipped", notification_id=row.id, kind=row.kind, reason=reason)
        return None
    return Prepared(row.id, row.kind, str(row.msisdn), row.message, row.attempts)


RETRY = "retry"


def record_answer(session: Session, notification_id: int, answer: SendAnswer | None, *, attempt: int,
                  error: str | None = None, retry_in_s: int = 60) -> str:
    """Keep what the provider answered to send number ``attempt`` (``answer`` None: the answer was
    lost, ``error`` says how). Returns the row's new state, or ``RETRY`` when the caller should send
    it again. An answer to an earlier attempt than the row's (a sweep judged that claim stale and
    another send has begun) changes nothing."""
    row = notifications.lock(session, notification_id)
    if row is None or row.state != "sending" or row.attempts != attempt:
        return row.state if row is not None else "gone"
    if answer is None:
        row.answers_lost += 1
        row.last_error = f"answer_lost: {error}"[:300]
        if row.answers_lost > ANSWERS_LOST_MAX:
            row.state = "unknown"
            log.warning("notice_outcome_unknown", notification_id=row.id, error=error)
            return row.state
        _again(row, retry_in_s)
        return RETRY
    row.provider_status, row.provider_message_id = answer.status, answer.message_id or row.provider_message_id
    if answer.verdict == "sent":
        row.state, row.last_error = "sent", None
        row.sent_at = func.now()  # type: ignore[assignment]
        return row.state
    row.last_error = answer.status[:300]
    if answer.verdict == "refused":
        row.state = "failed"
        log.warning("notice_refused", notification_id=row.id, status=answer.status)
        return row.state
    _again(row, retry_in_s)
    return RETRY


def _again(row: Notification, retry_in_s: int) -> None:
    row.state = "pending"
    # The retry message sends it; the sweep takes it only if that message is lost.
    row.next_attempt_at = func.now() + func.make_interval(0, 0, 0, 0, 0, 0, retry_in_s)  # type: ignore[assignment]


def give_up_stale_send(session: Session, notification_id: int, attempt: int) -> str:
    """A send (number ``attempt``) whose worker died before its answer was kept: the answer is lost."""
    return record_answer(session, notification_id, None, attempt=attempt, error="the sending worker was lost")


def record_delivery(session: Session, body: Any) -> str:
    """A delivery report (an inbox row, ``sms_delivery``): what the network did with a sent SMS.
    It changes no money and no send, only ``delivery_status``; returns the inbox row's reason."""
    report = parse_delivery_report(body)
    notice = notifications.by_provider_message_id(session, report.message_id)
    if notice is None:
        return f"sms_delivery:unknown_message:{report.message_id}"[:200]
    said = f"sms_delivery:{notice.id}:{report.status}"[:200]
    if (notice.delivery_status or "").split(":")[0] in FINAL_DELIVERY and report.status not in FINAL_DELIVERY:
        return said + ":late"  # a report of an earlier step, arriving after the final one
    notice.delivery_status = (report.status + (f": {report.failure_reason}" if report.failure_reason else ""))[:200]
    return said


# Delivery reports that end a message's story; Sent, Submitted and Buffered are steps on the way.
FINAL_DELIVERY = frozenset({"Success", "Failed", "Rejected", "AbsentSubscriber", "Expired"})


def statement_asked(session: Session, driver: Driver, *, day: date, session_id: str,
                    facts: dict[str, Any]) -> tuple[int | None, bool]:
    """A statement a driver asked for by USSD: one a day (each costs several segments), however
    often it is asked. Returns the new notice (None when today's was asked for already) and
    whether today's was asked for in this very USSD session."""
    subject = f"{driver.code}:{day.isoformat()}"
    notice_id = notify(session, "statement", subject, driver.id, {**facts, "session_id": session_id})
    if notice_id is not None:
        return notice_id, True
    earlier = notifications.by_key(session, "statement", subject)
    return None, earlier is not None and earlier.facts.get("session_id") == session_id
