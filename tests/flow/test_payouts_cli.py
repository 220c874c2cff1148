"""Operators' payout commands and ``fleetpay simulate c2b``, run as subprocesses."""

from __future__ import annotations

import json
import uuid

import httpx
from sqlalchemy import select

from db.models import Inbox, Payout
from tests.flow.test_payouts import pay_fares, settle, sim_payments
from tests.support import add_driver_with_vehicle, approve_request, fleetpay, next_driver_code, pending_count, two_people, wait_until


def test_failed_payout_is_listed_retried_once_and_paid(database_url, ingest_url, simulator, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code, msisdn="254733000123")
    httpx.post(f"{simulator}/sim/faults", json={"mode": "result_failure", "result_code": 2001}, timeout=10)
    [failed_id] = pay_fares(ingest_url, sessions, vehicle, 1, amount="300.00")
    settle(sessions, [failed_id])

    listed = json.loads(fleetpay("payouts", "list", "--state", "failed", "--driver", code, "--json", database_url=database_url).stdout)
    assert [(p["id"], p["result_code"]) for p in listed["payouts"]] == [(failed_id, "2001")]
    # The evidence: M-Pesa's failure result, then the answer to our own status query, which settled it.
    shown = json.loads(fleetpay("payouts", "show", str(failed_id), "--json", database_url=database_url).stdout)
    assert shown["state"] == "failed" and len(shown["queries"]) >= 1
    kinds = [(e["kind"], e["result_code"]) for e in shown["evidence"]]
    assert kinds[0] == ("b2c_result", "2001") and "status_result" in [kind for kind, _ in kinds]
    assert [e["kind"] for e in shown["evidence"] if e["settled_it"]] == ["status_result"]
    table = fleetpay("payouts", "show", str(failed_id), database_url=database_url).stdout
    assert "evidence" in table and "2001" in table
    assert fleetpay("payouts", "show", "999999999", database_url=database_url, check=False).returncode == 1

    asker, approver = two_people(sessions)
    refused = fleetpay("payouts", "resolve", str(failed_id), "--reason", "r", "--user", asker, database_url=database_url,
                       check=False)
    assert refused.returncode == 1 and "failed" in refused.stderr

    asked = fleetpay("payouts", "retry", str(failed_id), "--reason", "proven unpaid", "--user", asker, database_url=database_url)
    assert f"pay KES 150 to {code} again (failed payout {failed_id})" in asked.stdout
    approve_request(asked, approver, database_url)
    with sessions() as session:
        new_id = session.execute(select(Payout.id).where(Payout.cause_key == f"retry:{failed_id}")).scalar_one()
    again = fleetpay("payouts", "retry", str(failed_id), "--reason", "again", "--user", asker, database_url=database_url, check=False)
    assert again.returncode == 1 and "retried already" in again.stderr
    settle(sessions, [new_id])
    with sessions() as session:
        new = session.get(Payout, new_id)
        assert (new.state, new.amount_cents) == ("paid", 15_000)
    assert sim_payments(simulator)[new.originator_conversation_id] == 1

    missing = fleetpay("payouts", "retry", "999999999", "--reason", "x", "--user", asker, database_url=database_url, check=False)
    assert missing.returncode == 1 and "no payout" in missing.stderr


def test_simulate_c2b_drives_a_payment_end_to_end(database_url, ingest_url, simulator, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code, msisdn="254744000321")
    receipt = f"SIM{uuid.uuid4().hex[:7].upper()}"
    fleetpay("simulate", "c2b", "--account", vehicle, "--amount", "200", "--trans-id", receipt, database_url=database_url)
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the simulated payment")
    with sessions() as session:
        assert session.execute(select(Inbox.status).where(Inbox.external_id == receipt)).scalar_one() == "processed"
        [payout_id] = session.execute(select(Payout.id).where(Payout.cause_key == f"share:c2b:{receipt}")).scalars().all()
    settle(sessions, [payout_id])
    balance = json.loads(fleetpay("balance", code, "--json", database_url=database_url).stdout)
    assert balance["paid_out_cents"] == 10_000
