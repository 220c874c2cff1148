"""``sweep_inbox()``: re-enqueue inbox rows still ``received`` after ``inbox_sweep_after_s``.

This is what makes "acknowledged means never lost" true when Redis was down at the ack, was
flushed, or a message vanished with a dead worker. Idempotency: re-enqueuing a row that is also
still queued is harmless, since a row is applied once (``apply_callbacks``, in chunks of ``apply_batch_max``). A row whose message is
failing (waiting for a retry, or dead-lettered: ``workers.failures``) is left to that message, so
one failure makes one dead letter; purging the dead letter gives the row back to the sweep.
"""

from __future__ import annotations

import dramatiq
import structlog
from sqlalchemy.orm import Session, sessionmaker

from db import inbox
from fleetpay.settings import Settings
from workers import runtime
from workers.broker import NAMESPACE, enqueue_many
from workers.failures import failing
from workers.messages import SWEEP_INBOX, apply_callbacks_messages

log = structlog.get_logger("fleetpay.worker")


def enqueue_stale_inbox_rows(sessions: sessionmaker[Session], settings: Settings, *, older_than_s: int | None = None) -> int:
    """Enqueue the rows still waiting; returns how many (``fleetpay sweep`` calls it too)."""
    with sessions.begin() as session:
        ids = inbox.take_stale_ids(
            session,
            older_than_s=settings.inbox_sweep_after_s if older_than_s is None else older_than_s,
            limit=settings.sweep_batch_max,
        )
    held = failing(runtime.shared, NAMESPACE, "inbox", ids)
    ids = [inbox_id for inbox_id in ids if inbox_id not in held]
    enqueue_many(runtime.broker, apply_callbacks_messages(ids, queue_name=settings.queue_name,
                                                          batch_max=settings.apply_batch_max))
    if ids:
        log.warning("inbox_swept", count=len(ids), first_inbox_id=ids[0])
    if held:
        log.info("inbox_sweep_left_failing_rows", count=len(held), inbox_ids=sorted(held)[:20])
    return len(ids)


# A PostgreSQL blip must not dead-letter a sweep: a few quick retries (about 1, 2, 4 s), all over
# long before the scheduler's next sweep; a sweep is idempotent, so a retry overlapping it is harmless.
@dramatiq.actor(
    actor_name=SWEEP_INBOX, queue_name=runtime.settings.queue_name, max_retries=3, min_backoff=1_000, max_backoff=4_000
)
def sweep_inbox() -> None:
    enqueue_stale_inbox_rows(runtime.sessions(), runtime.settings)
