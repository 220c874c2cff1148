"""``process_callback(inbox_id)``: apply one stored callback to the books.

Idempotency: the inbox row is locked and only a ``received`` row is processed, and every posting
is keyed by the M-Pesa receipt (``c2b:<TransID>``). A redelivered message, a sweeper re-enqueue or
a second worker finds the row done (or waits for the first worker's transaction) and changes
nothing.

Failures: a body that cannot be applied (``InvalidCallback``) or a posting conflict marks the row
``rejected`` with its reason instead of retrying for days. Anything else (connection loss,
serialization failure, deadlock) rolls back and is retried with backoff by dramatiq; a message
that still fails ends in the dead-letter queue (``fleetpay dlq``).
"""

from __future__ import annotations

import dramatiq
import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from db.ledger import PostingConflict
from db.models import Inbox
from schemas.callbacks import InvalidCallback
from schemas.json_body import decode_json
from workers import runtime
from workers.apply_payment import Applied
from workers.inbox_handlers import HANDLERS
from workers.messages import PROCESS_CALLBACK
from workers.send_payout import send_payout

log = structlog.get_logger("fleetpay.worker")


# Built once: this runs for every message (docs/benchmarks.md, "Apply").
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
        processed_at=func.now(),
        attempts=_inbox.attempts + 1,
    )
)


def apply_inbox_row(session: Session, inbox_id: int) -> Applied | None:
    """Process the row in the caller's transaction; None when there is nothing (left) to do."""
    row = session.execute(_LOCK_ROW, {"inbox_id": inbox_id}).scalar_one_or_none()
    if row is None or row.status != "received":
        return None
    handler = HANDLERS.get(row.kind)
    if handler is None:
        applied = Applied("rejected", f"no_handler:{row.kind}")
    else:
        applied = handler(session, row, decode_json(row.body.encode()), runtime.settings)
    finish(session, inbox_id, applied.status, applied.reason)
    return applied


def finish(session: Session, inbox_id: int, status: str, reason: str | None) -> None:
    """Core UPDATE: nothing reads the row's ORM copy after this."""
    session.execute(_FINISH, {"inbox_id": inbox_id, "new_status": status, "new_reason": reason})


@dramatiq.actor(actor_name=PROCESS_CALLBACK, queue_name=runtime.settings.queue_name, **runtime.RETRY_OPTIONS)
def process_callback(inbox_id: int) -> None:
    # trans_id is bound by the handler once the body is read; cleared with this context.
    with structlog.contextvars.bound_contextvars(inbox_id=inbox_id, trans_id=None):
        sessions = runtime.sessions()
        try:
            with sessions.begin() as session:
                applied = apply_inbox_row(session, inbox_id)
        except (InvalidCallback, PostingConflict) as problem:
            reason = problem.reason if isinstance(problem, InvalidCallback) else f"conflict:{problem.key}"
            log.error("callback_rejected", reason=reason)
            with sessions.begin() as session:
                row = session.execute(
                    select(Inbox.status).where(Inbox.id == inbox_id).with_for_update()
                ).scalar_one()
                if row == "received":
                    finish(session, inbox_id, "rejected", reason)
            return
        if applied is None:
            log.info("callback_already_processed")
            return
        log.info("callback_processed", status=applied.status, reason=applied.reason, payout_ids=applied.payout_ids)
        for payout_id in applied.payout_ids:  # committed: if this is lost, sweep_payouts sends it
            send_payout.send(payout_id)
