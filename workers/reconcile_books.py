"""``reconcile_books()``: the scheduled reconciliation check (``db.reconcile``).

Idempotency: a check only reads the books and records what it found; running it twice records
two runs and changes no money. Fixing is an operator's decision (``fleetpay reconcile --fix``).
"""

from __future__ import annotations

import dramatiq
import structlog

from db.reconcile import run_check
from workers import runtime
from workers.messages import RECONCILE_BOOKS

log = structlog.get_logger("fleetpay.reconcile")


@dramatiq.actor(actor_name=RECONCILE_BOOKS, queue_name=runtime.settings.queue_name, max_retries=0, time_limit=3_600_000)
def reconcile_books() -> None:
    run_id, found = run_check(runtime.sessions())
    if found:
        log.error("books_do_not_reconcile", run_id=run_id, discrepancies=len(found),
                  kinds=sorted({d.kind for d in found}))
    else:
        log.info("books_reconcile", run_id=run_id)
