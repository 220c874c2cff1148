"""Pull recovery: what M-Pesa lists (Pull Transactions) against what our inbox has.

Daraja does not retry a failed callback (docs/daraja.md §2.4): a confirmation we never received is
money we would never see. Every receipt M-Pesa lists for the last 48 hours that our inbox lacks is
inserted as if its confirmation had arrived (the same inbox key, so a late real callback is a
duplicate) and applied by the workers as usual. Every confirmation we hold that M-Pesa does not
list is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from db.models import Inbox
from db.reconcile import Discrepancy, record_run
from fleetpay.settings import Settings
from schemas.callbacks import InvalidCallback, body_digest, parse_c2b
from schemas.json_body import decode_json

log = structlog.get_logger("fleetpay.reconcile")

WINDOW = timedelta(hours=48)
# Our confirmations this young may simply not be listed yet.
SETTLING = timedelta(minutes=5)


@dataclass
class PullReport:
    listed: int = 0
    recovered_inbox_ids: list[int] = field(default_factory=list)
    missing_at_mpesa: list[Discrepancy] = field(default_factory=list)
    run_id: int | None = None
    error: str | None = None  # why M-Pesa could not be asked (one line); nothing else was done


def record_pull_failure(sessions: sessionmaker[Session], error: str) -> PullReport:
    """Pull Transactions could not be used (not enabled for the paybill, auth, no answer): kept as a
    run with its error, so the report, the CLI and ``/metrics`` say so."""
    with sessions.begin() as session:
        run_id = record_run(session, kind="mpesa", found=[], error=error)
    return PullReport(run_id=run_id, error=error)


def confirmation_from_pull(row: dict[str, Any], settings: Settings) -> dict[str, str]:
    """The confirmation body M-Pesa would have sent for a pulled row."""
    at = datetime.fromisoformat(str(row["trxDate"]).replace("Z", "+00:00"))
    tz = ZoneInfo(settings.timezone)
    at = at.replace(tzinfo=tz) if at.tzinfo is None else at.astimezone(tz)
    return {
        "TransactionType": "Pay Bill",
        "TransID": str(row["transactionId"]),
        "TransTime": at.strftime("%Y%m%d%H%M%S"),
        "TransAmount": str(row["amount"]),
        "BusinessShortCode": settings.daraja_app("c2b").short_code,
        "BillRefNumber": str(row.get("billreference") or ""),
        "InvoiceNumber": "",
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
        "MSISDN": str(row.get("msisdn") or ""),
        "FirstName": str(row.get("sender") or ""),
        "MiddleName": "",
        "LastName": "",
        "FleetpayRecoveredFrom": "pull_transactions",
    }


def pull_window(settings: Settings, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The period Pull Transactions can answer for: the last 48 hours, local time."""
    end = now or datetime.now(ZoneInfo(settings.timezone))
    return end - WINDOW, end


def recover_from_pull(
    sessions: sessionmaker[Session],
    rows: list[dict[str, Any]],
    settings: Settings,
    *,
    start: datetime,
    end: datetime,
) -> PullReport:
    """Compare M-Pesa's ``rows`` for [start, end] with our inbox, in one transaction: insert each
    missing confirmation for the workers to apply, report each of ours M-Pesa does not list."""
    report = PullReport(listed=len(rows))
    listed = {str(row["transactionId"]): row for row in rows}
    with sessions.begin() as session:
        have = set(
            session.execute(
                select(Inbox.external_id).where(Inbox.kind == "c2b_confirmation", Inbox.external_id.in_(list(listed)))
            ).scalars()
        )
        for trans_id in sorted(set(listed) - have):
            confirmation = confirmation_from_pull(listed[trans_id], settings)
            inbox_id = session.execute(
                pg_insert(Inbox)
                .values(kind="c2b_confirmation", external_id=trans_id, body=json.dumps(confirmation),
                        source_ip="pull_transactions", body_digest=body_digest(confirmation))
                .on_conflict_do_nothing()
                .returning(Inbox.id)
            ).scalar_one_or_none()
            if inbox_id is not None:
                report.recovered_inbox_ids.append(inbox_id)
        ours = session.execute(
            select(Inbox.external_id, Inbox.body).where(
                Inbox.kind == "c2b_confirmation",
                Inbox.status != "rejected",
                Inbox.received_at >= start,
                Inbox.received_at < end - SETTLING,
            )
        ).all()
        for trans_id, body in ours:
            if trans_id in listed:
                continue
            try:
                payment = parse_c2b(decode_json(body.encode()))
            except InvalidCallback:  # bad input kept for inspection: never a payment we booked
                continue
            if start <= payment.trans_time <= end - SETTLING:
                report.missing_at_mpesa.append(
                    Discrepancy("mpesa_missing", trans_id, None, 0, payment.amount_cents)
                )
        recovered = [
            Discrepancy("recovered_from_mpesa", listed_id, None, 0, 0)
            for listed_id in sorted(set(listed) - have)
        ]
        report.run_id = record_run(session, kind="mpesa", found=report.missing_at_mpesa + recovered)
    if report.recovered_inbox_ids or report.missing_at_mpesa:
        log.warning("mpesa_reconciliation", recovered=len(report.recovered_inbox_ids),
                    missing_at_mpesa=len(report.missing_at_mpesa))
    return report
