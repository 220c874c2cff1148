"""``sweep_notifications()``: send the driver notices nobody is sending.

- ``pending`` and due: new notices whose message was lost after the COMMIT (or never sent: the
  daily close and a person's approval leave theirs to this sweep), and retries whose message is
  gone. Each is stamped when enqueued, so it is enqueued at most once per ``RETRY_IN_S``; notices
  whose send message is failing (retrying, or a dead letter waiting for a person:
  ``workers.failures``) are left alone;
- ``sending`` for ``sms_sending_stale_s``: its worker died between the send and keeping the
  answer, so the answer is lost (``money.notices.give_up_stale_send``: sent once more, or
  ``unknown``).

Idempotency: the claim makes every send happen once however often a notice is enqueued.
"""

from __future__ import annotations

import dramatiq
import structlog
from sqlalchemy.orm import Session, sessionmaker

from db import notifications
from fleetpay.settings import Settings
from money.notices import give_up_stale_send
from workers import runtime
from workers.broker import NAMESPACE
from workers.failures import failing
from workers.messages import SWEEP_NOTIFICATIONS
from workers.send_notification import RETRY_IN_S, send_notification

log = structlog.get_logger("fleetpay.notices")


def send_due_notices(sessions: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    limit = settings.sweep_batch_max
    with sessions() as session:
        stale = notifications.stale_sends(session, older_than_s=settings.sms_sending_stale_s, limit=limit)
    for notification_id, attempt in stale:
        with sessions.begin() as session:
            give_up_stale_send(session, notification_id, attempt)
    with sessions.begin() as session:
        due = notifications.take_due(session, redo_after_s=RETRY_IN_S, limit=limit)
    held = failing(runtime.shared, NAMESPACE, "notification", due)
    due = [notification_id for notification_id in due if notification_id not in held]
    for notification_id in due:
        send_notification.send(notification_id)
    counts = {"enqueued": len(due), "stale_sends": len(stale)}
    if any(counts.values()):
        log.info("notices_swept", **counts)
    return counts


@dramatiq.actor(
    actor_name=SWEEP_NOTIFICATIONS, queue_name=runtime.settings.notice_queue_name, max_retries=3, min_backoff=1_000,
    max_backoff=4_000,
)
def sweep_notifications() -> None:
    send_due_notices(runtime.sessions(), runtime.settings)
