"""``sweep_inbox()``: re-enqueue inbox rows still ``received`` after ``inbox_sweep_after_s``.

This is what makes "acknowledged means never lost" true when Redis was down at the ack, was
flushed, or a message vanished with a dead worker. Idempotency: re-enqueuing a row that is also
still queued is harmless, since ``process_callback`` processes a row once.
"""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Inbox
from workers import runtime
from workers.process_callback import process_callback

log = structlog.get_logger("fleetpay.worker")


def stale_inbox_ids(session: Session, *, older_than_s: int, limit: int) -> list[int]:
    return list(
        session.execute(
            select(Inbox.id)
            .where(Inbox.status == "received", Inbox.received_at < func.now() - timedelta(seconds=older_than_s))
            .order_by(Inbox.received_at)
            .limit(limit)
        ).scalars()
    )


def sweep(*, older_than_s: int | None = None) -> int:
    """Enqueue stale rows; returns how many. Also run by ``fleetpay sweep``."""
    settings = runtime.settings
    with runtime.sessions()() as session:
        ids = stale_inbox_ids(
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
