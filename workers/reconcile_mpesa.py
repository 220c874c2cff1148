"""``reconcile_mpesa()``: recover confirmations M-Pesa has and we missed (``money.mpesa_recovery``).

Idempotency: a recovered receipt enters the inbox under the same key its confirmation would have
had, so a second run, or the real callback arriving late, is a duplicate that changes nothing.
"""

from __future__ import annotations

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from fleetpay.settings import Settings
from money.mpesa_recovery import PullReport, pull_window, recover_from_pull
from workers import runtime
from workers.daraja.client import DarajaClient
from workers.messages import RECONCILE_MPESA
from workers.process_callback import process_callback


def recover_missed_confirmations(
    sessions: sessionmaker[Session], daraja: DarajaClient, settings: Settings
) -> PullReport:
    """Ask M-Pesa for the last 48 hours, store what we missed, enqueue it (``fleetpay reconcile --mpesa``
    calls it too)."""
    start, end = pull_window(settings)
    report = recover_from_pull(sessions, daraja.pull_all(start, end), settings, start=start, end=end)
    for inbox_id in report.recovered_inbox_ids:
        process_callback.send(inbox_id)
    return report


@dramatiq.actor(actor_name=RECONCILE_MPESA, queue_name=runtime.settings.queue_name, max_retries=3, time_limit=600_000)
def reconcile_mpesa() -> None:
    recover_missed_confirmations(runtime.sessions(), runtime.daraja(), runtime.settings)
