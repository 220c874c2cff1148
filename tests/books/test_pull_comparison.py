"""Comparing M-Pesa's Pull list with our inbox (``money.mpesa_recovery.recover_from_pull``): bad
input kept for inspection is not a payment, and never stops the comparison."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from db.models import Inbox
from money.mpesa_recovery import recover_from_pull
from tests.books.test_daily_close import settings


def test_a_kept_bad_confirmation_does_not_stop_the_comparison(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        session.add(Inbox(kind="c2b_confirmation", external_id="bad-1", body=json.dumps({"TransAmount": "10.00"})))
        session.add(Inbox(kind="c2b_confirmation", external_id="bad-2", body="{not json"))
    with fresh_sessions.begin() as session:
        session.execute(text("UPDATE inbox SET received_at = now() - interval '10 minutes'"))
    now = datetime.now(timezone.utc)
    report = recover_from_pull(fresh_sessions, [], settings(), start=now - timedelta(hours=1), end=now)
    assert report.missing_at_mpesa == [] and report.recovered_inbox_ids == []
