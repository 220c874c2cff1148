"""The SMS outbox's rows (``notifications``): written once per event, claimed to send, finished.

Every statement is built once. A row is written with ``ON CONFLICT DO NOTHING`` on its event key
(kind, subject), so the same event written twice, by a redelivered message or a concurrent copy,
is one row. A send claims its row by a conditional UPDATE (``pending → sending``), so two workers
never send one row at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Driver, Notification

_n = Notification.__table__.c
_ADD = (
    pg_insert(Notification.__table__)
    .values(kind=bindparam("kind"), subject=bindparam("subject"), driver_id=bindparam("driver_id"),
            facts=bindparam("facts"),
            next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("after_s")))
    .on_conflict_do_nothing(index_elements=["kind", "subject"])
    .returning(_n.id)
)
_CLAIM = (
    update(Notification)
    .where(Notification.id == bindparam("notification_id"), Notification.state == "pending")
    .values(state="sending", attempts=Notification.attempts + 1, claimed_at=func.now())
    .returning(Notification)
)


def add(session: Session, *, kind: str, subject: str, driver_id: int, facts: dict[str, Any],
        after_s: int = 0) -> int | None:
    """The new row's id, or None when this event's notice exists already; it is due ``after_s``
    from now."""
    return session.execute(
        _ADD, {"kind": kind, "subject": subject, "driver_id": driver_id, "facts": facts, "after_s": after_s}
    ).scalar_one_or_none()


def claim(session: Session, notification_id: int) -> Notification | None:
    """Take a pending row to send it (``sending``, one attempt more); None when it is not pending
    (sent, being sent by another worker, finished)."""
    return session.execute(_CLAIM, {"notification_id": notification_id}).scalar_one_or_none()


def lock(session: Session, notification_id: int) -> Notification | None:
    return session.execute(
        select(Notification).where(Notification.id == notification_id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def take_due(session: Session, *, redo_after_s: int, limit: int) -> list[int]:
    """Pending rows due for a send (new ones, and those whose retry is due), stamped
    ``redo_after_s`` ahead so each is enqueued at most once per that time."""
    due = (
        select(Notification.id)
        .where(Notification.state == "pending", Notification.next_attempt_at <= func.now())
        .order_by(Notification.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.execute(
        update(Notification).where(Notification.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, redo_after_s))
        .returning(Notification.id)
    ).scalars())


def stale_sends(session: Session, *, older_than_s: int, limit: int) -> list[tuple[int, int]]:  # type: ignore[return-value]
    """Rows still ``sending`` after ``older_than_s`` (id, the attempt then): their worker died before
    the answer was kept."""
    return list(session.execute(
        select(Notification.id, Notification.attempts)
        .where(Notification.state == "sending",
               Notification.claimed_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s))
        .limit(limit)
    ).all())


def by_key(session: Session, kind: str, subject: str) -> Notification | None:
    return session.execute(
        select(Notification).where(Notification.kind == kind, Notification.subject == subject)
    ).scalar_one_or_none()


def by_provider_message_id(session: Session, message_id: str) -> Notification | None:
    """The notice sent as ``message_id`` (the first, should the provider ever repeat an id)."""
    return session.execute(
        select(Notification).where(Notification.provider_message_id == message_id).order_by(Notification.id)
        .limit(1).with_for_update()
    ).scalars().first()


def for_driver(session: Session, driver_code: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """A driver's latest notices, newest first (what was said, and what became of it)."""
    rows = session.execute(
        select(Notification).join(Driver, Driver.id == Notification.driver_id)
        .where(Driver.code == driver_code).order_by(Notification.id.desc()).limit(limit)
    ).scalars()
    return [
        {"id": row.id, "kind": row.kind, "state": row.state, "to": row.msisdn, "message": row.message,
         "segments": row.segments, "attempts": row.attempts, "delivery": row.delivery_status,
         "error": row.last_error, "created_at": _iso(row.created_at), "sent_at": _iso(row.sent_at)}
        for row in rows
    ]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()

