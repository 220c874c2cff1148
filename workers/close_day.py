"""``close_day(business_date)``: the scheduled daily close (``money.daily_close``).

Idempotency: per driver and day (``driver_days.closed_at``, keyed postings and payouts): a
redelivered or repeated close changes nothing; one that crashed half-way is finished.

Without a date (the scheduler's firing) it closes every ended business day not closed yet, oldest
first: a scheduler that was down at the close time catches up when it comes back. A day the close
must refuse (not ended, before the fleet existed) is logged and skipped, never retried. A driver
whose close fails is held back on the later days (their days close in order) while everyone else's
close; the message then fails, so dramatiq retries it (and a failure that stays is a dead letter
with its error), and each retry finishes what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import dramatiq
import structlog
from sqlalchemy.orm import Session, sessionmaker

from fleetpay.settings import Settings
from money.daily_close import CloseRefused, CloseSummary, close_business_day, days_to_close
from workers import runtime
from workers.messages import CLOSE_DAY
from workers.send_payout import send_payouts
from workers.sweep_notifications import sweep_notifications

log = structlog.get_logger("fleetpay.close")


def close_and_pay(
    sessions: sessionmaker[Session],
    settings: Settings,
    day: date,
    *,
    forced_reason: str | None = None,
    after_each: Callable[[int], None] | None = None,
    hold: frozenset[int] = frozenset(),
) -> tuple[CloseSummary, bool]:
    """Close ``day``, then enqueue the payouts it reserved (``fleetpay close-day`` calls it too).
    Returns the summary and whether the payouts were enqueued (if not, the payout sweep sends them);
    ``CloseRefused`` for a day that must not be closed, unless ``forced_reason``."""
    summary = close_business_day(sessions, day, settings, forced_reason=forced_reason, after_each=after_each, hold=hold)
    enqueued = send_payouts(summary.payout_ids)
    try:
        sweep_notifications.send()  # the day's summaries go out now, not at the next sweep
    except Exception as error:  # noqa: BLE001 — committed: the scheduled sweep sends them
        log.warning("notices_sweep_not_enqueued", error=str(error))
    log.info("business_day_closed", business_date=str(day), **summary.closed, flagged=summary.flagged)
    return summary, enqueued


@dramatiq.actor(actor_name=CLOSE_DAY, queue_name=runtime.settings.queue_name, max_retries=3, time_limit=3_600_000)
def close_day(business_date: str | None = None) -> None:
    sessions = runtime.sessions()
    if business_date:
        days = [date.fromisoformat(business_date)]
    else:
        with sessions() as session:
            days = days_to_close(session, runtime.settings)
    held: frozenset[int] = frozenset()
    incomplete: list[str] = []
    for day in days:
        try:
            summary, _ = close_and_pay(sessions, runtime.settings, day, hold=held)
        except CloseRefused as refused:
            log.error("business_day_close_refused", business_date=str(day), reason=str(refused))
            continue
        if not summary.complete:
            held |= frozenset(summary.failed) | frozenset(summary.held)
            incomplete.append(str(day))
    if incomplete:
        raise CloseIncomplete(f"business days {', '.join(incomplete)} are not closed for drivers {sorted(held)}: "
                              "see driver_day_close_failed in the log")


class CloseIncomplete(RuntimeError):
    """Some drivers' days could not be closed: the message fails, so it is retried."""
