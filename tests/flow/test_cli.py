"""The operator commands, run as a user runs them: ``fleetpay …`` in a subprocess."""

from __future__ import annotations

import json

from sqlalchemy import select

from db.models import Inbox
from tests.support import approve_request, fleetpay, next_driver_code, next_receipt, next_vehicle_code, open_payouts, pending_count, two_people, wait_until



def test_register_pay_assign_and_read_balance(database_url, http, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    vehicle = next_vehicle_code()
    code = next_driver_code()
    fleetpay("migrate", database_url=database_url)  # safe to re-run
    fleetpay("vehicles", "add", "--code", vehicle.lstrip("0") or "0", database_url=database_url)
    fleetpay("drivers", "add", "--code", code, "--name", "Amina", "--msisdn", "0712 345 678",
             "--vehicle", vehicle, "--target-kes", "1000", "--fare-percent", "60", database_url=database_url)

    refused = fleetpay("drivers", "add", "--code", code, "--name", "Again", "--msisdn", "0712345678",
                       database_url=database_url, check=False)
    assert refused.returncode == 1 and "exists" in refused.stderr
    bad_number = fleetpay("drivers", "add", "--code", "D000001", "--name", "X", "--msisdn", "2547 ***** 149",
                          database_url=database_url, check=False)
    assert bad_number.returncode == 2

    fare, stray = next_receipt("F"), next_receipt("U")
    from tests.support import c2b_body

    assert http.post("c2b/confirm", json=c2b_body(fare, "500.00", vehicle, at="20261124090000")).status_code == 200
    assert http.post("c2b/confirm", json=c2b_body(stray, "700.00", "WRONG-REF", at="20261124091500")).status_code == 200
    wait_until(lambda: pending_count(sessions, [fare, stray]) == 0, what="both payments")

    listed = json.loads(fleetpay("unmatched", "list", "--json", database_url=database_url).stdout)
    assert stray in {p["trans_id"] for p in listed["unmatched"]}

    asker, approver = two_people(sessions)
    asked = fleetpay("unmatched", "assign", stray, "--driver", code, "--reason", "customer typed the plate", "--user", asker,
                     database_url=database_url)
    assert "runs once another person approves it" in asked.stdout
    approve_request(asked, approver, database_url)
    again = fleetpay("unmatched", "assign", stray, "--driver", code, "--reason", "twice", "--user", asker,
                     database_url=database_url, check=False)
    assert again.returncode == 1 and "already: nothing to do" in again.stderr  # a second time asks nothing

    wait_until(lambda: open_payouts(sessions, code) == 0, what="the shares to be paid out")
    balance = json.loads(fleetpay("balance", code, "--date", "2026-11-24", "--json", database_url=database_url).stdout)
    # 500 at 60 %: 300 share, 200 towards the 1,000 target; the assigned 700 fare: 420 share, 280.
    assert balance == {
        "driver": code,
        "business_date": "2026-11-24",
        "target_cents": 100_000,
        "contributed_cents": 48_000,
        "left_to_target_cents": 52_000,
        "payable_cents": 0,
        "in_flight_cents": 0,
        "paid_out_cents": 72_000,
        "deposit_cents": 0,
        "consecutive_misses": 0,
    }
    with sessions() as session:
        assert session.execute(select(Inbox.status).where(Inbox.external_id == stray)).scalar_one() == "processed"
    assert stray not in fleetpay("unmatched", "list", "--json", database_url=database_url).stdout

    missing = fleetpay("balance", "D999999", "--json", database_url=database_url, check=False)
    assert missing.returncode == 1 and "no driver" in missing.stderr
