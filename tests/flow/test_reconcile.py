"""Reconciliation over everything the other tests wrote: it starts clean, finds exactly what
direct SQL corrupts without changing anything, and an operator's fix mends it once."""

from __future__ import annotations

import json
import os
import uuid
from datetime import date

import httpx
from sqlalchemy import func, select, text

from db import ledger
from db.models import Driver, DriverDay, Inbox, Posting, ReconciliationFix
from db.users import add_user
from tests.support import add_driver_with_vehicle, c2b_body, fleetpay, next_driver_code, next_receipt, pending_count, wait_until


def reconcile(database_url: str, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    """``fleetpay reconcile --json ARGS``, with Pull Transactions on (the simulator offers it)."""
    env = {**os.environ, "FLEETPAY_LOG_JSON": "false", "FLEETPAY_PULL_ENABLED": "true"}
    result = fleetpay("reconcile", "--json", *args, database_url=database_url, env=env, check=False)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_check_reports_corruption_exactly_and_fix_mends_it_once(database_url, http, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code)
    receipt = next_receipt("Q")
    assert http.post("c2b/confirm", json=c2b_body(receipt, "800.00", vehicle, at="20261124080000")).status_code == 200
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the payment")

    status, clean = reconcile(database_url)
    assert (status, clean["ok"], clean["discrepancies"]) == (0, True, [])

    with sessions.begin() as session:
        driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
        target = ledger.driver_accounts(session, driver_id).target
        session.execute(text("UPDATE accounts SET balance_cents = balance_cents + 12345 WHERE id = :a"), {"a": target})
        session.execute(
            text("UPDATE driver_days SET contributed_cents = contributed_cents - 500 WHERE driver_id = :d"), {"d": driver_id}
        )
        postings_before = session.execute(select(func.count()).select_from(Posting)).scalar_one()

    status, found = reconcile(database_url)
    assert status == 3 and not found["ok"]
    assert sorted((d["kind"], d["subject"], d["expected_cents"], d["actual_cents"], d["difference_cents"]) for d in found["discrepancies"]) == [
        ("cached_balance", f"driver:{code}:target", 40_000, 52_345, 12_345),
        ("driver_day", f"{code} 2026-11-24", 40_000, 39_500, -500),
    ]
    status, again = reconcile(database_url)  # a check changed nothing
    assert again["discrepancies"] == found["discrepancies"]

    refused = fleetpay("reconcile", "--fix", database_url=database_url, check=False)
    assert refused.returncode == 2 and "--reason" in refused.stderr

    with sessions.begin() as session:
        add_user(session, f"ops-{code}", "operator", "a long enough password")
        add_user(session, f"boss-{code}", "approver", "another long password")
    status, asked = reconcile(database_url, "--fix", "--reason", "test corruption", "--user", f"ops-{code}")
    assert (status, asked["fix"]["state"], len(asked["discrepancies"])) == (3, "pending", 2)  # nothing fixed yet
    approved = fleetpay("requests", "approve", str(asked["fix"]["request"]), "--user", f"boss-{code}", database_url=database_url)
    assert "approved and done" in approved.stdout
    status, fixed = reconcile(database_url)
    assert (status, fixed["ok"]) == (0, True)
    status, second = reconcile(database_url, "--fix", "--reason", "again", "--user", f"ops-{code}")
    assert (status, second["fix"]) == (0, {"refused": "the books have nothing a fix can correct now (run a check to see the discrepancies)"})

    with sessions() as session:
        assert ledger.balance_cents(session, target) == 40_000
        assert session.get(DriverDay, (driver_id, date(2026, 11, 24))).contributed_cents == 40_000
        assert session.execute(select(func.count()).select_from(Posting)).scalar_one() == postings_before
        fixes = session.execute(select(ReconciliationFix.kind, ReconciliationFix.delta_cents, ReconciliationFix.operator)
                                .where(ReconciliationFix.subject.contains(code))).all()
    assert sorted(fixes) == [("cached_balance", -12_345, f"ops-{code}"), ("driver_day", 500, f"ops-{code}")]


def test_pull_recovers_a_dropped_confirmation_once_even_if_it_arrives_late(database_url, simulator, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code)
    receipt = f"PUL{uuid.uuid4().hex[:7].upper()}"
    assert httpx.post(f"{simulator}/sim/faults", json={"mode": "drop_callback", "api": "c2b"}, timeout=10).status_code == 201
    fleetpay("simulate", "c2b", "--account", vehicle, "--amount", "300", "--trans-id", receipt, database_url=database_url)
    with sessions() as session:
        assert session.execute(select(Inbox.id).where(Inbox.external_id == receipt)).first() is None  # dropped

    status, result = reconcile(database_url, "--mpesa")
    assert result["mpesa"]["recovered"] >= 1
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the recovered payment")

    dropped = httpx.get(f"{simulator}/sim/callbacks", params={"kind": "c2b_confirmation", "ref": receipt}, timeout=10).json()
    [callback] = dropped["callbacks"]
    assert callback["dropped"]
    replayed = httpx.post(f"{simulator}/sim/callbacks/{callback['id']}/replay", timeout=10)
    assert replayed.status_code < 300, replayed.text
    status, again = reconcile(database_url, "--mpesa")
    assert receipt not in again["mpesa"]["missing_at_mpesa"]

    with sessions() as session:
        assert session.execute(select(func.count()).where(Posting.idempotency_key == f"c2b:{receipt}")).scalar_one() == 1
        rows = session.execute(select(Inbox.status, Inbox.source_ip).where(Inbox.external_id == receipt)).all()
    assert rows == [("processed", "pull_transactions")]  # the late callback was a duplicate
