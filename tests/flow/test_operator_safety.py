"""Commands that cannot hurt the books by accident, and that say what they did: run as a user
runs them (``fleetpay …`` in a subprocess) against real PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text

from db import fleet
from db.models import DailyClose, Driver, DriverDay, Inbox
from db.users import add_user
from fleetpay.settings import Settings
from money.daily_close import close_business_day, days_to_close
from money.deposits import refund
from tests.support import (
    add_driver_with_vehicle,
    approve_request,
    c2b_body,
    fleetpay,
    next_driver_code,
    next_receipt,
    pending_count,
    two_people,
    wait_until,
)

EAT = ZoneInfo("Africa/Nairobi")


def url_of(sessions) -> str:  # type: ignore[no-untyped-def]
    return sessions.kw["bind"].url.render_as_string(hide_password=False)


def close_day(sessions, *args: str):  # type: ignore[no-untyped-def]
    return fleetpay("close-day", *args, database_url=url_of(sessions), check=False)


def closed_rows(sessions) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        days = session.execute(select(func.count()).select_from(DriverDay).where(DriverDay.closed_at.is_not(None))).scalar_one()
        closes = session.execute(select(func.count()).select_from(DailyClose)).scalar_one()
    return days, closes


def test_the_close_refuses_today_the_future_and_days_before_the_fleet(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D120001", vehicle_code="120")  # registered just now
    today = datetime.now(EAT).date()
    for args, said in [
        ((), "before the fleet existed"),  # the default, yesterday: nobody was there
        (("--date", today.isoformat()), "has not ended"),
        (("--date", (today + timedelta(days=3)).isoformat()), "has not ended"),
        (("--date", "2020-01-01"), "before the fleet existed"),
    ]:
        refused = close_day(fresh_sessions, *args)
        assert refused.returncode == 1 and said in refused.stderr, (args, refused.stderr)
        assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr
    assert closed_rows(fresh_sessions) == (0, 0)  # nothing changed

    assert close_day(fresh_sessions, "--date", "2020-01-01", "--force").returncode == 2  # needs a reason
    forced = close_day(fresh_sessions, "--date", "2020-01-01", "--force", "--reason", "migration from the old system", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["business_date"] == "2020-01-01"  # stdout is one JSON document
    with fresh_sessions() as session:
        assert session.get(DailyClose, date(2020, 1, 1)).forced_reason == "migration from the old system"


def test_a_mistaken_close_is_undone_once_a_second_person_approves(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D120005", vehicle_code="125")
        session.execute(text("UPDATE drivers SET created_at = '2019-12-01'"))
        add_user(session, "amina", "approver", "a long enough password")  # approvers ask too
        add_user(session, "bob", "approver", "another long password")
    url = url_of(fresh_sessions)
    forced = close_day(fresh_sessions, "--date", "2020-01-01", "--force", "--reason", "typo")
    assert forced.returncode == 0, forced.stderr
    with fresh_sessions() as session:
        assert session.execute(select(Driver.consecutive_misses)).scalar_one() == 1  # the harm done
    usage = fleetpay("undo-close", "--date", "2020-01-01", "--reason", "typo", database_url=url, check=False)
    assert usage.returncode == 2 and "--user" in usage.stderr  # who asks is required
    nobody = fleetpay("undo-close", "--date", "2020-01-01", "--reason", "x", "--user", "mallory", database_url=url, check=False)
    assert nobody.returncode == 1 and "no user mallory" in nobody.stderr
    not_closed = fleetpay("undo-close", "--date", "2020-01-02", "--reason", "x", "--user", "amina",
                          database_url=url, check=False)
    assert not_closed.returncode == 1 and "is not closed" in not_closed.stderr
    assert not_closed.stderr.strip().count("\n") == 0
    asked = fleetpay("undo-close", "--date", "2020-01-01", "--reason", "meant 2026", "--user", "amina", "--json",
                     database_url=url, check=False)
    assert asked.returncode == 0, asked.stderr
    request = json.loads(asked.stdout)
    assert (request["state"], closed_rows(fresh_sessions)) == ("pending", (1, 1))  # nothing undone yet
    twice = fleetpay("undo-close", "--date", "2020-01-01", "--reason", "again", "--user", "bob", database_url=url, check=False)
    assert twice.returncode == 1 and "already waiting" in twice.stderr
    own = fleetpay("requests", "approve", str(request["request"]), "--user", "amina", database_url=url, check=False)
    assert own.returncode == 1 and "another person decides it" in own.stderr
    approved = fleetpay("requests", "approve", str(request["request"]), "--user", "bob", database_url=url, check=False)
    assert approved.returncode == 0 and "approved and done" in approved.stdout, approved.stderr
    assert closed_rows(fresh_sessions) == (0, 0)
    with fresh_sessions() as session:
        assert session.execute(select(Driver.consecutive_misses)).scalar_one() == 0
        assert session.execute(text("SELECT outcome->'reopened' FROM money_requests")).scalar_one() == 1
        assert session.execute(text("SELECT operator, reason FROM operator_actions WHERE action = 'close_undone'")).one() == (
            "amina", f"meant 2026 (request {request['request']}, approved by bob)")  # who asked, why, and the second person
        assert session.execute(text("SELECT operator FROM operator_actions WHERE action = 'money_request_approved'")).scalar_one() == "bob"
    again = fleetpay("undo-close", "--date", "2020-01-01", "--reason", "x", "--user", "amina", database_url=url, check=False)
    assert again.returncode == 1 and "is not closed" in again.stderr


def test_a_flagged_driver_is_reinstated_and_days_off_are_rostered(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D120006", vehicle_code="126")
        add_user(session, "amina", "operator", "a long enough password")
        add_user(session, "vera", "viewer", "a long enough password")
    url = url_of(fresh_sessions)
    viewer = fleetpay("drivers", "reinstate", "D120006", "--reason", "x", "--user", "vera", database_url=url, check=False)
    assert viewer.returncode == 1 and "it takes an operator or above" in viewer.stderr
    stranger = fleetpay("drivers", "reinstate", "D120006", "--reason", "x", "--user", "nobody", database_url=url, check=False)
    assert stranger.returncode == 1 and "no user nobody" in stranger.stderr
    active = fleetpay("drivers", "reinstate", "d120006", "--reason", "x", "--operator", "amina", database_url=url, check=False)
    assert active.returncode == 1 and "only a flagged driver" in active.stderr
    unknown = fleetpay("drivers", "reinstate", "D999999", "--reason", "x", "--operator", "amina", database_url=url, check=False)
    assert unknown.returncode == 1 and "no driver D999999" in unknown.stderr
    with fresh_sessions.begin() as session:
        session.execute(text("UPDATE drivers SET status = 'flagged', consecutive_misses = 3"))
    done = fleetpay("drivers", "reinstate", "D120006", "--reason", "sick days", "--operator", "amina", "--json",
                    database_url=url, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"driver": "D120006", "status": "active", "refunds_withdrawn": [],
                                       "refunds_already_released": []}
    with fresh_sessions() as session:
        assert session.execute(select(Driver.status, Driver.consecutive_misses)).one() == ("active", 0)

    tomorrow = (datetime.now(EAT) + timedelta(days=1)).date().isoformat()
    rostered = fleetpay("drivers", "day-off", "D120006", "--date", tomorrow, "--operator", "amina", database_url=url, check=False)
    assert rostered.returncode == 0 and "day off rostered" in rostered.stdout, rostered.stderr
    shown = fleetpay("drivers", "show", "D120006", "--json", database_url=url, check=False)
    assert json.loads(shown.stdout)["days_off"] == [tomorrow]
    cancelled = fleetpay("drivers", "day-off", "D120006", "--date", tomorrow, "--cancel", "--operator", "amina",
                         database_url=url, check=False)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    shown = fleetpay("drivers", "show", "D120006", "--json", database_url=url, check=False)
    assert json.loads(shown.stdout)["days_off"] == []


def test_a_scheduler_that_was_down_closes_every_missed_day_when_it_comes_back(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from fleetpay.settings import Settings

    settings = Settings()
    with fresh_sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D120002", vehicle_code="121")
        session.execute(text("UPDATE drivers SET created_at = now() - interval '3 days 1 hour'"))
    with fresh_sessions() as session:
        missed = days_to_close(session, settings)
    yesterday = datetime.now(EAT).date() - timedelta(days=1)
    assert missed[-1] == yesterday and 3 <= len(missed) <= 4
    for day in missed:
        close_business_day(fresh_sessions, day, settings)
    with fresh_sessions() as session:
        assert days_to_close(session, settings) == []


def test_assigning_money_tells_the_truth(http, worker, sessions, database_url) -> None:  # type: ignore[no-untyped-def]
    codes = [next_driver_code() for _ in range(2)]
    with sessions.begin() as session:
        for code in codes:
            add_driver_with_vehicle(session, driver_code=code)
    receipt = next_receipt("U")
    assert http.post("c2b/confirm", json=c2b_body(receipt, "300.00", "NOBODY")).status_code == 200
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the unmatched payment")

    asker, approver = two_people(sessions)
    unknown = fleetpay("unmatched", "assign", receipt, "--driver", "D999999", "--user", asker, "--reason", "typo", database_url=database_url, check=False)
    assert unknown.returncode == 1 and "no driver D999999" in unknown.stderr  # refused when asked: nothing to approve
    asked = fleetpay("unmatched", "assign", receipt, "--driver", codes[0].lower(), "--user", asker, "--reason", "typed the plate", database_url=database_url)
    assert approve_request(asked, approver, database_url).stdout.startswith("request")
    again = fleetpay("unmatched", "assign", receipt, "--driver", codes[0], "--user", asker, "--reason", "twice", database_url=database_url, check=False)
    assert again.returncode == 1 and f"assigned to {codes[0]} already: nothing to do" in again.stderr
    other = fleetpay("unmatched", "assign", receipt, "--driver", codes[1], "--user", asker, "--reason", "wrong", database_url=database_url, check=False)
    assert other.returncode == 1 and f"already assigned to {codes[0]}" in other.stderr
    unknown_again = fleetpay("unmatched", "assign", receipt, "--driver", "D999999", "--user", asker, "--reason", "x", database_url=database_url, check=False)
    assert unknown_again.returncode == 1 and "assigned to D999999" not in unknown_again.stdout
    with sessions() as session:
        assert session.execute(select(Inbox.reason).where(Inbox.external_id == receipt)).scalar_one().startswith(f"assigned:{codes[0]}:")


def test_a_vehicle_s_driver_is_replaced_only_when_asked(sessions, database_url) -> None:  # type: ignore[no-untyped-def]
    first, second = next_driver_code(), next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=first)
    added = fleetpay("drivers", "add", "--code", second, "--name", "B", "--msisdn", "0712000111", "--vehicle", vehicle,
                     database_url=database_url, check=False)
    assert added.returncode == 1 and "--replace" in added.stderr and first in added.stderr
    with sessions() as session:  # refused as a whole: no driver added, the vehicle's driver unchanged
        assert session.execute(select(Driver.id).where(Driver.code == second)).first() is None
        assert fleet.payee_for_vehicle(session, vehicle).driver_id == fleet.get_driver(session, first).id
    fleetpay("drivers", "add", "--code", second, "--name", "B", "--msisdn", "0712000111", database_url=database_url)
    refused = fleetpay("drivers", "assign", "--code", second, "--vehicle", vehicle, database_url=database_url, check=False)
    assert refused.returncode == 1 and "--replace" in refused.stderr
    fleetpay("drivers", "assign", "--code", second.lower(), "--vehicle", vehicle, "--replace", database_url=database_url)
    with sessions() as session:
        assert fleet.payee_for_vehicle(session, vehicle).driver_id == fleet.get_driver(session, second).id


def test_an_unreachable_database_is_one_line_and_no_traceback() -> None:
    env = {**os.environ, "FLEETPAY_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none", "FLEETPAY_LOG_JSON": "false"}
    for args in (("balance", "D112006", "--json"), ("payouts", "list", "--json"), ("close-day", "--json")):
        result = fleetpay(*args, env=env, check=False)
        assert result.returncode == 5, (args, result.stderr)
        assert result.stdout == "" and result.stderr.count("\n") == 1 and "PostgreSQL is not reachable" in result.stderr
        assert "Traceback" not in result.stderr
    debug = fleetpay("balance", "D112006", "--debug", env=env, check=False)
    assert "Traceback" in debug.stderr


def test_codes_are_read_as_users_type_them(sessions, database_url) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code=code)
    assert json.loads(fleetpay("balance", code.lower(), "--json", database_url=database_url).stdout)["driver"] == code
    listed = json.loads(fleetpay("payouts", "list", "--driver", code.lower(), "--json", database_url=database_url).stdout)
    assert listed == {"payouts": [], "next_after": None}


def test_the_fleet_can_be_seen_page_by_page_and_a_substitute_stood_down(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    database_url = url_of(fresh_sessions)
    with fresh_sessions.begin() as session:
        for n in range(3):
            add_driver_with_vehicle(session, driver_code=f"D13000{n}", vehicle_code=f"13{n}")
        fleet.add_driver(session, code="D139999", name="Sub", msisdn="254711000999")
        fleet.assign(session, driver_code="D139999", vehicle_code="130", substitute=True)
    first = json.loads(fleetpay("drivers", "list", "--limit", "2", "--json", database_url=database_url).stdout)
    assert [d["code"] for d in first["drivers"]] == ["D130000", "D130001"] and first["next_after"] == "D130001"
    rest = json.loads(fleetpay("drivers", "list", "--after", "d130001", "--json", database_url=database_url).stdout)
    assert [d["code"] for d in rest["drivers"]] == ["D130002", "D139999"] and rest["next_after"] is None
    assert rest["drivers"][1]["substitute_of"] == "130"
    vehicles = json.loads(fleetpay("vehicles", "list", "--json", database_url=database_url).stdout)["vehicles"]
    assert vehicles[0] == {"code": "130", "regular_driver": "D130000", "substitute": "D139999"}
    shown = json.loads(fleetpay("drivers", "show", "d130000", "--json", database_url=database_url).stdout)
    assert (shown["driver"], shown["regular_of"], shown["status"], shown["payable_cents"]) == ("D130000", "130", "active", 0)

    assert "D139999" in fleetpay("drivers", "end-shift", "--vehicle", "130", database_url=database_url).stdout
    again = fleetpay("drivers", "end-shift", "--vehicle", "130", database_url=database_url, check=False)
    assert again.returncode == 1 and "no substitute" in again.stderr
    with fresh_sessions() as session:
        assert fleet.payee_for_vehicle(session, "130").role == "regular"


def test_payouts_are_listed_a_page_at_a_time(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from db import ledger
    from money.payouts import create_payout

    day = date(2026, 11, 30)
    with fresh_sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D140001", vehicle_code="140")
        driver = fleet.lock_driver(session, fleet.get_driver(session, "D140001").id)
        ledger.post(session, key="seed:140", kind="fare", business_date=day, driver_id=driver.id,
                    legs=[(ledger.system_accounts(session).mpesa, -3_000),
                          (ledger.driver_accounts(session, driver.id).payable, 3_000)])
        ids = [create_payout(session, driver=driver, amount_cents=1_000, cause_key=f"test:{n}", business_date=day).id
               for n in range(3)]
    first = json.loads(fleetpay("payouts", "list", "--limit", "2", "--json", database_url=url_of(fresh_sessions)).stdout)
    assert [p["id"] for p in first["payouts"]] == ids[:0:-1] and first["next_after"] == ids[1]
    rest = json.loads(fleetpay("payouts", "list", "--after", str(ids[1]), "--json", database_url=url_of(fresh_sessions)).stdout)
    assert [p["id"] for p in rest["payouts"]] == [ids[0]] and rest["next_after"] is None
    table = fleetpay("payouts", "list", "--limit", "2", database_url=url_of(fresh_sessions)).stdout
    assert f"more: run again with --after {ids[1]}" in table


def test_a_deposit_is_topped_up_and_refunded_by_two_people(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from db import ledger
    from db.models import Payout

    with fresh_sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D120007", vehicle_code="127")
        driver_id = fleet.get_driver(session, "D120007").id
        ledger.post(session, key="seed:D120007", kind="fare", business_date=date(2026, 11, 30), driver_id=driver_id,
                    legs=[(ledger.system_accounts(session).mpesa, -80_000),
                          (ledger.driver_accounts(session, driver_id).payable, 80_000)])
        add_user(session, "amina", "approver", "a long enough password")
        add_user(session, "bob", "approver", "another long password")
    url = url_of(fresh_sessions)
    too_much = fleetpay("deposits", "topup", "d120007", "--amount-kes", "900", "--reason", "consent", "--operator", "amina",
                        database_url=url, check=False)
    assert too_much.returncode == 1 and "less than" in too_much.stderr and "Traceback" not in too_much.stderr
    topped = fleetpay("deposits", "topup", "D120007", "--amount-kes", "500", "--reason", "consent", "--operator", "amina",
                      "--json", database_url=url, check=False)
    assert topped.returncode == 0, topped.stderr
    assert json.loads(topped.stdout)["deposit_cents"] == 50_000
    asked = fleetpay("deposits", "refund", "D120007", "--reason", "leaving", "--user", "amina", "--json",
                     database_url=url, check=False)
    assert asked.returncode == 0, asked.stderr
    request = json.loads(asked.stdout)
    assert (request["state"], request["what"]) == ("pending", "refund KES 500 of the deposit of D120007")
    same = fleetpay("requests", "approve", str(request["request"]), "--user", "amina", database_url=url, check=False)
    assert same.returncode == 1 and "four eyes" in same.stderr
    rejected = fleetpay("requests", "reject", str(request["request"]), "--user", "bob", "--note", "not leaving", database_url=url)
    assert "rejected" in rejected.stdout
    with fresh_sessions.begin() as session:  # a refund the close made on termination: held for approval
        [payout_id] = refund(session, "D120007", None, Settings(), operator="close", reason="terminated",
                             business_date=date(2026, 11, 30))["payouts"]
    withdraw = fleetpay("payouts", "withdraw", str(payout_id), "--reason", "reinstated", "--user", "amina", database_url=url)
    withdrawn = approve_request(withdraw, "bob", url)
    assert "approved and done" in withdrawn.stdout
    shown = json.loads(fleetpay("drivers", "show", "D120007", "--json", database_url=url).stdout)
    assert shown["deposit_cents"] == 50_000
    with fresh_sessions() as session:
        assert session.get(Payout, payout_id).state == "failed"
