"""``reconcile_mpesa()``: recover confirmations M-Pesa has and we missed (``workers.mpesa_pull``).

Idempotency: a recovered receipt enters the inbox under the same key its confirmation would have
had, so a second run, or the real callback arriving late, is a duplicate that changes nothing.
"""

from __future__ import annotations

import dramatiq

from workers import runtime
from workers.mpesa_pull import reconcile_with_mpesa
from workers.process_callback import process_callback


@dramatiq.actor(queue_name=runtime.settings.queue_name, max_retries=3, time_limit=600_000)
def reconcile_mpesa() -> None:
    report = reconcile_with_mpesa(runtime.sessions(), runtime.daraja(), runtime.settings)
    for inbox_id in report.recovered_inbox_ids:
        process_callback.send(inbox_id)
