"""Gauges of the books, read from PostgreSQL at each scrape (the ingest serves ``/metrics``):

- ``fleetpay_inbox_rows{status}``: callbacks waiting (``received``), refused (``rejected``), in
  suspense (``unmatched``) and conflicting duplicates kept for review (``conflict``); processed rows
  are not counted (they only grow);
- ``fleetpay_payouts{state}``: payouts by state (``unknown``, ``failure_reported`` and ``review``
  need attention, ``pending`` with approval too);
- ``fleetpay_overpaid_cents``: what drivers were paid beyond what they were owed (a payment M-Pesa
  made after we had booked it failed and paid it again);
- ``fleetpay_last_closed_business_date_timestamp_seconds``: the last business day closed;
- ``fleetpay_driver_days_left_open``: driver days that ended two or more days ago and are still not
  closed (a close that failed for some drivers, a day outside the catch-up window);
- ``fleetpay_mpesa_pull_ok``: whether the last Pull Transactions comparison could run;
- ``fleetpay_mpesa_utility_available_cents`` and ``…_observed_timestamp_seconds``: the B2C utility
  account as M-Pesa's last Account Balance answer gave it (the low-float alert reads it);
- ``fleetpay_postings_created``: postings written so far (the id sequence);
- ``fleetpay_notices{state}``: drivers' SMS waiting to be sent (``pending``, ``sending``), refused
  for a number (``failed``) and sent with no answer twice (``unknown``); ``fleetpay_notices_overdue``:
  notices still unsent ten minutes after their event (SMS down, or the key refused: a dead letter);
- ``fleetpay_sms_segments_today``: SMS segments sent since the fleet's midnight (each one is paid for);
- ``fleetpay_reconciliation_discrepancies`` and ``…_last_check_timestamp_seconds``: the last
  reconciliation check.

Each query is indexed and bounded by a statement timeout; a scrape never fails for them.

They are read by the process that answers the scrape, once, never counted into the multiprocess
files of ``fleetpay ingest --workers N`` (``ingest.metrics``): each value is the database's, so every
ingest instance reports the same one. Aggregate them across instances with ``max``, never ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

log = structlog.get_logger("fleetpay.metrics")

QUERIES = {
    "inbox": (
        "SELECT status, count(*) FROM inbox WHERE status IN ('received', 'rejected', 'unmatched', 'conflict')"
        " GROUP BY status"
    ),
    "overpaid": "SELECT coalesce(-sum(balance_cents), 0) FROM accounts WHERE kind = 'payable' AND balance_cents < 0",
    "closed": "SELECT extract(epoch FROM max(business_date)) FROM daily_closes",
    "open_days": "SELECT count(*) FROM driver_days WHERE closed_at IS NULL AND business_date < current_date - 1",
    "pull": "SELECT error IS NULL FROM reconciliation_runs WHERE kind = 'mpesa' ORDER BY id DESC LIMIT 1",
    "float": (
        "SELECT utility_available_cents, extract(epoch FROM observed_at) FROM float_observations"
        " ORDER BY id DESC LIMIT 1"
    ),
    "payouts": "SELECT state, count(*) FROM payouts GROUP BY state",
    "postings": "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM postings_id_seq",
    "notices": (
        "SELECT state, count(*) FROM notifications WHERE state IN ('pending', 'sending', 'failed', 'unknown')"
        " GROUP BY state"
    ),
    "notices_overdue": (
        "SELECT count(*) FROM notifications WHERE state IN ('pending', 'sending')"
        " AND created_at < now() - interval '10 minutes'"
    ),
    "segments": (
        "SELECT coalesce(sum(segments), 0) FROM notifications WHERE state = 'sent'"
        " AND sent_at >= date_trunc('day', now() AT TIME ZONE :tz) AT TIME ZONE :tz"
    ),
    "reconciliation": (
        "SELECT discrepancies, extract(epoch FROM finished_at) FROM reconciliation_runs"
        " WHERE kind = 'check' ORDER BY id DESC LIMIT 1"
    ),
}


class BooksGauges(Collector):
    def __init__(self, engine: Engine, timezone: str) -> None:
        self.engine = engine
        self.timezone = timezone

    def collect(self) -> Iterator[GaugeMetricFamily]:
        inbox = GaugeMetricFamily("fleetpay_inbox_rows", "Inbox rows by status (processed not counted).", labels=["status"])
        payouts = GaugeMetricFamily("fleetpay_payouts", "Payouts by state.", labels=["state"])
        postings = GaugeMetricFamily("fleetpay_postings_created", "Ledger postings written so far.")
        discrepancies = GaugeMetricFamily("fleetpay_reconciliation_discrepancies", "Discrepancies of the last check.")
        checked = GaugeMetricFamily("fleetpay_reconciliation_last_check_timestamp_seconds", "When the last check ended.")
        overpaid = GaugeMetricFamily("fleetpay_overpaid_cents", "Paid to drivers beyond what they were owed.")
        closed = GaugeMetricFamily("fleetpay_last_closed_business_date_timestamp_seconds",
                                   "The last business day the daily close ran for (its date, midnight UTC).")
        open_days = GaugeMetricFamily("fleetpay_driver_days_left_open",
                                      "Driver days ended two or more days ago and not closed yet.")
        pull_ok = GaugeMetricFamily("fleetpay_mpesa_pull_ok", "1 if the last Pull Transactions comparison ran, 0 if it failed.")
        utility = GaugeMetricFamily("fleetpay_mpesa_utility_available_cents", "The B2C utility account, as M-Pesa last said.")
        utility_at = GaugeMetricFamily("fleetpay_mpesa_utility_observed_timestamp_seconds", "When M-Pesa said it.")
        notices = GaugeMetricFamily("fleetpay_notices", "Drivers' SMS not sent (yet), by state.", labels=["state"])
        overdue = GaugeMetricFamily("fleetpay_notices_overdue", "Drivers' SMS unsent ten minutes after their event.")
        segments = GaugeMetricFamily("fleetpay_sms_segments_today", "SMS segments sent since the fleet's midnight.")
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SET LOCAL statement_timeout = '2s'"))
                for status, count in connection.execute(text(QUERIES["inbox"])):
                    inbox.add_metric([status], count)
                for state, count in connection.execute(text(QUERIES["payouts"])):
                    payouts.add_metric([state], count)
                postings.add_metric([], connection.execute(text(QUERIES["postings"])).scalar_one())
                overpaid.add_metric([], connection.execute(text(QUERIES["overpaid"])).scalar_one())
                if (last_closed := connection.execute(text(QUERIES["closed"])).scalar_one()) is not None:
                    closed.add_metric([], float(last_closed))
                open_days.add_metric([], connection.execute(text(QUERIES["open_days"])).scalar_one())
                if (ran := connection.execute(text(QUERIES["pull"])).scalar_one_or_none()) is not None:
                    pull_ok.add_metric([], 1 if ran else 0)
                if (observed := connection.execute(text(QUERIES["float"])).first()) is not None:
                    utility.add_metric([], observed[0])
                    utility_at.add_metric([], float(observed[1]))
                for state, count in connection.execute(text(QUERIES["notices"])):
                    notices.add_metric([state], count)
                overdue.add_metric([], connection.execute(text(QUERIES["notices_overdue"])).scalar_one())
                segments.add_metric([], connection.execute(text(QUERIES["segments"]), {"tz": self.timezone}).scalar_one())
                last = connection.execute(text(QUERIES["reconciliation"])).first()
                if last is not None:
                    discrepancies.add_metric([], last[0])
                    checked.add_metric([], float(last[1]))
        except Exception as error:  # noqa: BLE001 — a scrape must never fail for these gauges
            log.warning("books_metrics_unavailable", error=str(error))
        yield from (inbox, payouts, postings, discrepancies, checked, overpaid, closed, open_days, pull_ok, utility,
                    utility_at, notices, overdue, segments)


def books_metrics(engine: Engine, timezone: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BooksGauges(engine, timezone))
    return registry
