"""``sweep_inbox()``: re-enqueue inbox rows still ``received`` after ``inbox_sweep_after_s``.

This is what makes "acknowledged means never lost" true when Redis was down at the ack, was
flushed, or a message vanished with a dead worker. Idempotency: re-enqueuing a row that is also
still queued is harmless, since ``process_callback`` processes a row once.
"""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.models import Inbox
from workers import runtime
from workers.process_callback import process_callback

log = structlog.get_logger("fleetpay.worker")


BACKOFF_DOUBLINGS_MAX = 6


def take_stale_inbox_ids(session: Session, *, older_than_s: int, limit: int) -> list[int]:
    """Rows still ``received`` after ``older_than_s``, that were not re-enqueued recently: a row
    swept n times waits ``older_than_s × 2ⁿ`` (at most 64×) before the next time, so a queue that
    is merely behind is not flooded with copies of what it already holds."""
    after = timedelta(seconds=older_than_s)
    due = (
        select(Inbox.id)
        .where(
            Inbox.status == "received",
            Inbox.received_at < func.now() - after,
            or_(
                Inbox.swept_at.is_(None),
                Inbox.swept_at < func.now() - after * func.power(2, func.least(Inbox.sweeps, BACKOFF_DOUBLINGS_MAX)),
            ),
        )
        .order_by(Inbox.received_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(
        session.execute(
            update(Inbox)
            .where(Inbox.id.in_(due.scalar_subquery()))
            .values(swept_at=func.now(), sweeps=Inbox.sweeps + 1)
            .returning(Inbox.id)
        ).scalars()
    )


def sweep(*, older_than_s: int | None = None) -> int:
    """Enqueue stale rows; returns how many. Also run by ``fleetpay sweep``."""
    settings = runtime.settings
    with runtime.sessions().begin() as session:
        ids = take_stale_inbox_ids(
            session,
            older_than_s=settings.inbox_sweep_after_s if older_than_s is None else older_than_s,
            limit=settings.sweep_batch_max,
        )
    for inbox_id in ids:
        process_callback.send(inbox_id)
    if ids:
        log.warning("inbox_swept", count=len(ids), first_inbox_id=ids[0])
    return len(ids)


@dramatiq.actor(queue_name=runtime.settings.queue_name, max_retries=0)
def sweep_inbox() -> None:
    sweep()
