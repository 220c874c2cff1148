"""``reconcile_mpesa()``: recover confirmations M-Pesa has and we missed (``money.mpesa_recovery``).

Idempotency: a recovered receipt enters the inbox under the same key its confirmation would have
had, so a second run, or the real callback arriving late, is a duplicate that changes nothing.

Only with ``FLEETPAY_PULL_ENABLED`` (the paybill must be registered for Pull Transactions). When
Daraja refuses or does not answer, the run is kept with its error, logged once, and the actor ends
normally: nothing to retry for hours, no dead letter; the next period tries again.
"""

from __future__ import annotations

import dramatiq
import redis
import structlog
from sqlalchemy.orm import Session, sessionmaker

from fleetpay.settings import Settings
from money.mpesa_recovery import PullReport, pull_window, record_pull_failure, recover_from_pull
from workers import runtime
from workers.daraja.client import DarajaClient, DarajaError
from workers.messages import RECONCILE_MPESA
from workers.process_callback import process_callback

log = structlog.get_logger("fleetpay.reconcile")


def recover_missed_confirmations(
    sessions: sessionmaker[Session], daraja: DarajaClient, settings: Settings
) -> PullReport:
    """Ask M-Pesa for the last 48 hours, store what we missed, enqueue it (``fleetpay reconcile --mpesa``
    calls it too)."""
    start, end = pull_window(settings)
    try:
        report = recover_from_pull(sessions, daraja.pull_all(start, end), settings, start=start, end=end)
    except (DarajaError, redis.RedisError, KeyError, ValueError) as error:
        # Pull refused or silent, no token, Redis down, a row we cannot read: one line, recorded;
        # nothing to retry for hours and no dead letter: the next period tries again.
        return record_pull_failure(sessions, str(error) if isinstance(error, DarajaError) else f"{error.__class__.__name__}: {error}")
    for inbox_id in report.recovered_inbox_ids:  # committed: if this is lost, the inbox sweep enqueues them
        process_callback.send(inbox_id)
    return report


@dramatiq.actor(actor_name=RECONCILE_MPESA, queue_name=runtime.settings.queue_name, max_retries=3, time_limit=600_000)
def reconcile_mpesa() -> None:
    if not runtime.settings.pull_enabled:
        return
    report = recover_missed_confirmations(runtime.sessions(), runtime.daraja(), runtime.settings)
    if report.error:
        log.error("mpesa_pull_failed", error=report.error, run_id=report.run_id)
