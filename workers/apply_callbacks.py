"""``apply_callbacks(inbox_ids)``: apply a batch of stored callbacks (``money.callbacks.apply_callbacks``).

The ingest sends one message per group-commit batch (at most ``apply_batch_max`` rows), and the
inbox sweep one per chunk of the rows it finds waiting. The C2B confirmations among them are
applied together in one transaction; rows of other kinds one at a time.

Idempotency: as ``process_callback``, by the inbox row (only a ``received`` row is applied, under
its lock) and by the posting key: a redelivered message, a sweep's copy or a concurrent batch
holding some of the same rows changes nothing. A lost connection or a deadlock rolls back and the
message is retried with backoff. A row that fails alone is handed to a ``process_callback``
message of its own (its retries, its dead letter), so it never holds up the rest of its batch.

After the COMMITs, everything that follows (payouts to send, status queries, notices, rows handed
on) is enqueued in one Redis pipeline; if that is lost, the sweeps send them.
"""

from __future__ import annotations

import dramatiq
import structlog

from money.callbacks import apply_callbacks as apply_batch
from workers import runtime
from workers.broker import enqueue_many
from workers.check_payout_status import check_payout_status
from workers.messages import APPLY_CALLBACKS
from workers.process_callback import TRY_LATER_DELAY_MS, process_callback
from workers.send_notification import send_notification
from workers.send_payout import send_payout

log = structlog.get_logger("fleetpay.worker")


@dramatiq.actor(actor_name=APPLY_CALLBACKS, queue_name=runtime.settings.queue_name, **runtime.RETRY_OPTIONS)
def apply_callbacks(inbox_ids: list[int]) -> None:
    done = apply_batch(runtime.sessions(), inbox_ids, runtime.settings)
    follow_ups = [
        *(send_payout.message(payout_id) for payout_id in done.payout_ids),
        *(check_payout_status.message(payout_id) for payout_id in done.status_checks),
        *(process_callback.message(inbox_id) for inbox_id in done.alone),
        *(send_notification.message(notification_id) for notification_id in done.notice_ids),
    ]
    try:
        enqueue_many(runtime.broker, follow_ups)
    except Exception as error:  # committed: sweep_payouts, sweep_notifications and sweep_inbox send them
        log.warning("follow_ups_not_enqueued_sweeps_will_send", error=str(error), count=len(follow_ups))
    for inbox_id in done.later:  # a status answer that overtook the recording of its query
        process_callback.send_with_options(args=(inbox_id,), delay=TRY_LATER_DELAY_MS)
