"""``send_notification(notification_id)``: send one driver notice by SMS (``money.notices``).

Idempotency: the notice is claimed by a conditional UPDATE (``pending → sending``) before anything
is sent, so a redelivered message, a sweep's re-enqueue or a second worker finds it claimed (or
sent) and sends nothing. Its text is made once, at the first claim, so every attempt sends the same.

A send that surely did not go out (no connection, an HTTP error, a retryable status) puts the
notice back to ``pending`` and raises, so dramatiq retries it with backoff; one that keeps failing
ends in the dead-letter queue (``fleetpay dlq``) and the sweep leaves it there. A lost answer is
sent once more; a second loss leaves it ``unknown``. Nothing here touches money.
"""

from __future__ import annotations

from functools import lru_cache

import dramatiq
import structlog

from money.notices import RETRY, prepare, record_answer
from workers import runtime
from workers.messages import SEND_NOTIFICATION
from workers.sms.client import SmsClient

log = structlog.get_logger("fleetpay.notices")

RETRY_IN_S = 600  # the sweep waits this long for the retry message before sending it itself


class NoticeNotSent(RuntimeError):
    """The SMS did not go out (or its answer was lost once): dramatiq tries again."""


@lru_cache(maxsize=1)
def sms() -> SmsClient:
    return SmsClient(runtime.settings)


@dramatiq.actor(actor_name=SEND_NOTIFICATION, queue_name=runtime.settings.notice_queue_name, **runtime.RETRY_OPTIONS)
def send_notification(notification_id: int) -> None:
    with structlog.contextvars.bound_contextvars(notification_id=notification_id):
        sessions = runtime.sessions()
        with sessions.begin() as session:
            notice = prepare(session, notification_id, runtime.settings)
        if notice is None:
            return
        answer, error = sms().send(notice.to, notice.message)
        with sessions.begin() as session:
            state = record_answer(session, notification_id, answer, attempt=notice.attempt, error=error,
                                  retry_in_s=RETRY_IN_S)
        log.info("notice_sent" if state == "sent" else "notice_send_ended", kind=notice.kind, state=state,
                 attempt=notice.attempt, status=answer.status if answer else None, error=error)
        if state == RETRY:
            raise NoticeNotSent(answer.status if answer else f"answer lost: {error}")


def send_notifications(notification_ids: tuple[int, ...] | list[int]) -> None:
    """Enqueue notices already committed; if the broker does not take them, the sweep sends them."""
    try:
        for notification_id in notification_ids:
            send_notification.send(notification_id)
    except Exception as error:  # noqa: BLE001 — committed: sweep_notifications sends them
        log.warning("notices_not_enqueued_sweep_will_send", error=str(error), notification_ids=list(notification_ids))
