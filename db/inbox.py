"""Inbox rows as stored: lock one, mark its outcome, find the ones still waiting for a worker.

The ingest writes rows (``ingest.inbox_writer``); ``money.callbacks`` applies them.
"""

from __future__ import annotations

from datetime import timedelta

from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import INBOX_STATES, Inbox

# Built once: these run for every message (docs/benchmarks.md, "Apply").
_LOCK_ROW = (
    select(Inbox)
    .where(Inbox.id == bindparam("inbox_id"))
    .with_for_update()
    .execution_options(populate_existing=True)  # ``finish`` is a Core UPDATE: never trust a loaded copy
)
_inbox = Inbox.__table__.c
_FINISH = (
    update(Inbox.__table__)
    .where(_inbox.id == bindparam("inbox_id"))
    .values(
        status=bindparam("new_status"),
        reason=bindparam("new_reason"),
        payout_id=bindparam("payout_id"),
        processed_at=func.now(),
        attempts=_inbox.attempts + 1,
    )
)

SWEEP_BACKOFF_DOUBLINGS_MAX = 6
__all__ = ["INBOX_STATES", "finish", "list_rows", "lock_row", "take_stale_ids"]


def lock_row(session: Session, inbox_id: int) -> Inbox | None:
    """The row, locked for the rest of the transaction (None if there is no such row)."""
    return session.execute(_LOCK_ROW, {"inbox_id": inbox_id}).scalar_one_or_none()


def finish(session: Session, inbox_id: int, status: str, reason: str | None, payout_id: int | None = None) -> None:
    """Core UPDATE: nothing reads the row's ORM copy after this. ``payout_id``: the payout a
    result was taken to be about."""
    session.execute(_FINISH, {"inbox_id": inbox_id, "new_status": status, "new_reason": reason, "payout_id": payout_id})


def take_stale_ids(session: Session, *, older_than_s: int, limit: int) -> list[int]:
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
                Inbox.swept_at
                < func.now() - after * func.power(2, func.least(Inbox.sweeps, SWEEP_BACKOFF_DOUBLINGS_MAX)),
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


def list_rows(session: Session, *, status: str, kind: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Inbox rows in one status, newest first, with their bodies as kept (``fleetpay inbox list``):
    ``conflict`` lists the second bodies of receipts, kept beside the first and never applied."""
    query = select(Inbox).where(Inbox.status == status).order_by(Inbox.id.desc()).limit(limit)
    if kind:
        query = query.where(Inbox.kind == kind)
    return [
        {
            "id": row.id,
            "kind": row.kind,
            "external_id": row.external_id,
            "status": row.status,
            "reason": row.reason,
            "source_ip": row.source_ip,
            "received_at": row.received_at.isoformat(),
            "body": row.body,
        }
        for row in session.execute(query).scalars()
    ]
