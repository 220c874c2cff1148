"""``process_callback(inbox_id)``: apply one stored callback to the books (``money.callbacks``).

Idempotency: by the inbox row (only a ``received`` row is applied, under its lock) and by the
posting key (``c2b:<TransID>``): a redelivered message, a sweeper re-enqueue or a second worker
changes nothing. A body that cannot be applied is marked ``rejected``, not retried. Anything else
(connection loss, deadlock) rolls back and is retried with backoff; a message that still fails ends
in the dead-letter queue (``fleetpay dlq``).

After the COMMIT the payouts the payment reserved are enqueued (if that is lost, ``sweep_payouts``
sends them), the status queries a result asked for, and the driver notices it wrote (if those are
lost, ``sweep_notifications`` sends them). A row that cannot be judged yet (``TryLater``: a status answer that overtook the
recording of its query) is sent again after a short delay.
"""

from __future__ import annotations

import dramatiq
import structlog

from money.callbacks import apply_callback
from money.payout_results import TryLater
from workers import runtime
from workers.check_payout_status import check_payout_status
from workers.messages import PROCESS_CALLBACK
from workers.send_notification import send_notifications
from workers.send_payout import send_payout

log = structlog.get_logger("fleetpay.worker")

TRY_LATER_DELAY_MS = 2_000


@dramatiq.actor(actor_name=PROCESS_CALLBACK, queue_name=runtime.settings.queue_name, **runtime.RETRY_OPTIONS)
def process_callback(inbox_id: int) -> None:
    # trans_id is bound by the handler once the body is read; cleared with this context.
    with structlog.contextvars.bound_contextvars(inbox_id=inbox_id, trans_id=None):
        try:
            applied = apply_callback(runtime.sessions(), inbox_id, runtime.settings)
        except TryLater as later:  # rolled back; the row stays received (the inbox sweep backs this up)
            log.info("callback_applied_later", reason=str(later))
            process_callback.send_with_options(args=(inbox_id,), delay=TRY_LATER_DELAY_MS)
            return
        if applied is None:
            log.info("callback_already_processed")
            return
        log.info("callback_processed", status=applied.status, reason=applied.reason, payout_ids=applied.payout_ids)
        for payout_id in applied.payout_ids:
            send_payout.send(payout_id)
        for payout_id in applied.status_checks:
            check_payout_status.send(payout_id)
        send_notifications(applied.notice_ids)
