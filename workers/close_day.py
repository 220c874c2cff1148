"""``close_day(business_date)``: the scheduled daily close (``workers.daily_close``).

Idempotency: per driver and day (``driver_days.closed_at``, keyed postings and payouts): a
redelivered or repeated close changes nothing; one that crashed half-way is finished.
"""

from __future__ import annotations

from datetime import date

import dramatiq
import structlog

from workers import runtime
from workers.daily_close import close_business_day, yesterday
from workers.send_payout import send_payout

log = structlog.get_logger("fleetpay.close")


@dramatiq.actor(queue_name=runtime.settings.queue_name, max_retries=3, time_limit=3_600_000)
def close_day(business_date: str | None = None) -> None:
    day = date.fromisoformat(business_date) if business_date else yesterday(runtime.settings)
    summary = close_business_day(runtime.sessions(), day, runtime.settings)
    for payout_id in summary.payout_ids:
        send_payout.send(payout_id)
    log.info("business_day_closed", business_date=str(day), **summary.closed, flagged=summary.flagged)
