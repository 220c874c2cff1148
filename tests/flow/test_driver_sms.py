"""Drivers' SMS and USSD end to end: callbacks over HTTP into the ingest, real dramatiq workers and
Redis, PostgreSQL, and the simulator playing Africa's Talking over HTTP (its record is the truth)."""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select, update

from db.models import Driver, Notification, Payout
from tests.support import (
    AT_TOKEN,
    TOKEN,
    add_driver_with_vehicle,
    c2b_body,
    fleetpay,
    next_driver_code,
    next_receipt,
    two_people,
    wait_until,
)

_numbers = itertools.count(1)


def new_driver(sessions, *, instant_payouts: bool = True) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """A driver unique to the test, with their own number: (code, vehicle, +2547… as SMS are sent to)."""
    code, msisdn = next_driver_code(), f"2547{88_000_000 + next(_numbers) * 37 % 1_000_000:08d}"
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code, msisdn=msisdn)
        session.execute(update(Driver).where(Driver.code == code).values(instant_payouts=instant_payouts))
    return code, vehicle, f"+{msisdn}"


def sms_to(simulator: str, number: str) -> list[dict]:
    return httpx.get(f"{simulator}/sim/sms", params={"to": number}, timeout=10).json()["messages"]


def fault(simulator: str, *faults: dict) -> None:
    httpx.post(f"{simulator}/sim/faults", json=list(faults), timeout=10).raise_for_status()


def pay(ingest_url: str, vehicle: str, amount: str, receipt: str, copies: int = 1) -> None:
    """A fare paid now (the driver's today), delivered ``copies`` times at once."""
    body = json.dumps(c2b_body(receipt, amount, vehicle, at=datetime.now(ZoneInfo("Africa/Nairobi")))).encode()

    def deliver(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            return client.post(f"{ingest_url}/cb/{TOKEN}/c2b/confirm", content=body,
                               headers={"content-type": "application/json"}).status_code

    with ThreadPoolExecutor(max_workers=copies) as pool:
        assert set(pool.map(deliver, range(copies))) == {200}


def states(sessions, code: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return dict(session.execute(
            select(Notification.kind, Notification.state).join(Driver, Driver.id == Notification.driver_id)
            .where(Driver.code == code)).all())


def test_a_fare_delivered_twenty_times_and_its_payout_are_told_once_each_even_when_the_first_send_fails(
        ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    code, vehicle, number = new_driver(sessions)
    fault(simulator, {"mode": "http_5xx", "api": "sms", "match": {"to": number}})  # the first attempt: HTTP 500
    receipt = next_receipt("S")
    pay(ingest_url, vehicle, "400.00", receipt, copies=20)
    wait_until(lambda: states(sessions, code) == {"payment": "sent", "payout_paid": "sent"}, what="both SMS sent")
    messages = sms_to(simulator, number)  # in either order: the payment's SMS was tried again meanwhile
    with sessions() as session:
        paid_receipt = session.execute(select(Payout.receipt).join(Driver, Driver.id == Payout.driver_id)
                                       .where(Driver.code == code)).scalar_one()
    assert sorted(m["message"] for m in messages) == [
        f"fleetpay: KES 200 sent to your M-Pesa, receipt {paid_receipt}.",
        f"fleetpay: KES 400 received, {receipt} vehicle {vehicle}. Today KES 200 of KES 3,000 target. Your share KES 200.",
    ]
    assert all(m["status_code"] == 101 and m["segments"] == 1 for m in messages)
    with sessions() as session:
        attempts = session.execute(select(Notification.attempts).join(Driver, Driver.id == Notification.driver_id)
                                   .where(Driver.code == code, Notification.kind == "payment")).scalar_one()
    assert attempts == 2


def test_a_lost_answer_is_sent_once_more_and_a_refused_number_is_not_tried_again(
        ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    fault(simulator, {"mode": "http_timeout_after_accept", "api": "sms", "hang_s": 3, "match": {"to": number}})
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    wait_until(lambda: states(sessions, code) == {"payment": "sent"}, what="the payment's SMS")
    first, second = sms_to(simulator, number)  # the documented exception: the answer to the first was lost
    assert first["message"] == second["message"]

    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    fault(simulator, {"mode": "recipient_failure", "api": "sms", "status_code": 406, "match": {"to": number}})
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    wait_until(lambda: states(sessions, code) == {"payment": "failed"}, what="the refusal")
    assert [m["status_code"] for m in sms_to(simulator, number)] == [406]


def test_a_ussd_session_shows_the_drivers_numbers_and_sends_a_statement(
        ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    pay(ingest_url, vehicle, "500.00", next_receipt("S"))
    wait_until(lambda: states(sessions, code).get("payment") == "sent", what="the payment")

    def session(text: str) -> list[dict]:
        answer = httpx.post(f"{simulator}/sim/ussd", json={"url": f"{ingest_url}/at/{AT_TOKEN}/ussd",
                                                          "msisdn": number, "input": text}, timeout=30)
        return answer.json()["screens"]

    opening, today = session("1")
    assert opening["response"].startswith(f"CON fleetpay {code}\n1. Today")
    assert today["response"].startswith("CON Today") and "paid KES 250 of KES 3,000 target" in today["response"]
    money = session("2")[-1]["response"]
    assert money == "CON Payable now: KES 250\nOn its way to M-Pesa: KES 0\n0. Back"
    assert session("7*x")[-1]["response"].startswith("CON Invalid choice.")
    *_, done = session("4*1")
    assert done["response"] == "END Your statement is on its way by SMS."
    *_, again = session("4*1")  # one a day: each costs several segments
    assert again["response"] == "END Today's statement was sent already. Ask again tomorrow."
    wait_until(lambda: states(sessions, code).get("statement") == "sent", what="the statement")
    assert "you paid KES 250 of KES 21,000" in sms_to(simulator, number)[-1]["message"]

    stranger = httpx.post(f"{simulator}/sim/ussd", json={"url": f"{ingest_url}/at/{AT_TOKEN}/ussd",
                                                        "msisdn": "254799999999", "input": ""}, timeout=30)
    assert stranger.json()["screens"][0]["response"].startswith("END This number is not registered")


def test_a_delivery_report_is_kept_on_its_notice(ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    wait_until(lambda: states(sessions, code) == {"payment": "sent"}, what="the SMS")
    (sent,) = sms_to(simulator, number)
    report = {"id": sent["message_id"], "status": "Failed", "phoneNumber": number, "networkCode": "63902",
              "failureReason": "AbsentSubscriber", "retryCount": "0"}
    answer = httpx.post(f"{ingest_url}/at/{AT_TOKEN}/sms/delivery", data=report, timeout=10)
    assert (answer.status_code, answer.text) == (200, "OK")

    def delivery() -> str | None:
        with sessions() as session:
            return session.execute(select(Notification.delivery_status)
                                   .where(Notification.provider_message_id == sent["message_id"])).scalar_one()

    wait_until(lambda: delivery() == "Failed: AbsentSubscriber", what="the report applied")


def test_from_the_shell_a_driver_is_given_swahili_opts_out_and_their_notices_are_listed(
        ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    operator, _ = two_people(sessions)
    assert fleetpay("drivers", "sms", code, "--language", "sw", "--user", operator).stdout.strip() == (
        f"driver {code}: SMS in sw, optional notices on")
    dialled = fleetpay("simulate", "ussd", "--msisdn", number.removeprefix("+"), "--input", "2").stdout
    assert "> (dial)\nCON fleetpay" in dialled and "4. Taarifa kwa SMS" in dialled
    assert "> 2\nCON Unadai sasa: KES 0\nInatumwa M-Pesa: KES 0\n0. Rudi" in dialled
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    wait_until(lambda: states(sessions, code) == {"payment": "sent"}, what="the SMS")
    assert "imepokelewa" in sms_to(simulator, number)[0]["message"]
    fleetpay("drivers", "sms", code, "--opt-out", "--user", operator)
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    wait_until(lambda: len(json.loads(fleetpay("drivers", "notices", code, "--json").stdout)["notices"]) == 2
               and json.loads(fleetpay("drivers", "notices", code, "--json").stdout)["notices"][0]["state"] == "skipped",
               what="the second notice skipped")
    listed = json.loads(fleetpay("drivers", "notices", code, "--json").stdout)["notices"]
    assert [(n["kind"], n["state"], n["error"]) for n in listed] == [
        ("payment", "skipped", "opted_out"), ("payment", "sent", None)]
    assert len(sms_to(simulator, number)) == 1
    refused = fleetpay("drivers", "sms", code, "--language", "fr", "--user", operator, check=False)
    assert refused.returncode != 0 and "en, sw or default" in refused.stderr
    nobody = fleetpay("drivers", "sms", code, "--language", "en", "--user", "nobody", check=False)
    assert nobody.returncode != 0 and "Traceback" not in nobody.stderr


def test_the_segments_sent_today_are_a_metric(ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    def segments_today() -> float:
        metrics = httpx.get(f"{ingest_url}/metrics", timeout=10).text
        (line,) = [line for line in metrics.splitlines() if line.startswith("fleetpay_sms_segments_today ")]
        return float(line.split()[1])

    before = segments_today()
    code, vehicle, _ = new_driver(sessions, instant_payouts=False)
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    wait_until(lambda: states(sessions, code) == {"payment": "sent"}, what="the SMS")
    assert segments_today() >= before + 1  # other tests' SMS may count too: the database is shared
    assert "fleetpay_notices_overdue " in httpx.get(f"{ingest_url}/metrics", timeout=10).text


def test_what_the_provider_turned_away_is_sent_again_and_what_may_have_gone_is_sent_at_most_twice(
        ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    fault(simulator, {"mode": "http_5xx", "api": "sms", "status_code": 503, "times": 3, "match": {"to": number}})
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))  # turned away three times: surely not sent
    wait_until(lambda: states(sessions, code) == {"payment": "sent"}, what="the SMS, at the fourth try")
    assert len(sms_to(simulator, number)) == 1

    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    fault(simulator, {"mode": "http_5xx", "api": "sms", "status_code": 504, "times": 5, "match": {"to": number}})
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))  # a 504 may come after the SMS was queued
    wait_until(lambda: states(sessions, code) == {"payment": "unknown"}, what="two lost answers")
    with sessions() as session:
        attempts = session.execute(select(Notification.attempts).join(Driver, Driver.id == Notification.driver_id)
                                   .where(Driver.code == code)).scalar_one()
    assert attempts == 2  # and never a third


def test_a_send_that_keeps_failing_is_a_dead_letter_the_sweep_leaves_to_a_person(
        settings, broker, ingest_url, worker, simulator, sessions) -> None:  # type: ignore[no-untyped-def]
    from workers.dead_letters import DeadLetters
    from workers.failures import failing
    from workers.sweep_notifications import send_due_notices

    code, vehicle, number = new_driver(sessions, instant_payouts=False)
    fault(simulator, {"mode": "http_5xx", "api": "sms", "status_code": 503, "times": 100, "match": {"to": number}})
    pay(ingest_url, vehicle, "100.00", next_receipt("S"))
    with sessions() as session:
        wait_until(lambda: session.execute(select(Notification.id).join(Driver, Driver.id == Notification.driver_id)
                                           .where(Driver.code == code)).first() is not None, what="the notice")
        notice_id = session.execute(select(Notification.id).join(Driver, Driver.id == Notification.driver_id)
                                    .where(Driver.code == code)).scalar_one()
    letters = DeadLetters.from_settings(settings, broker)

    def dead() -> list:  # type: ignore[type-arg]
        return [d for d in letters.list(actor="send_notification") if d.reference == f"notification:{notice_id}"]

    wait_until(lambda: bool(dead()), timeout_s=90, what="the dead letter")
    (letter,) = dead()
    assert "NoticeNotSent: HTTP 503: Service Unavailable" in letter.summary()["last_error"]
    httpx.delete(f"{simulator}/sim/faults", timeout=10)  # Africa's Talking is back
    assert failing(broker.client, broker.namespace, "notification", [notice_id]) == {notice_id}
    with sessions.begin() as session:  # due again, but its message is dead: the sweep leaves it to a person
        session.execute(Notification.__table__.update().where(Notification.id == notice_id).values(
            next_attempt_at=func.now()))
    send_due_notices(sessions, settings)  # (other tests' due notices in this database go out: that is its job)
    time.sleep(2)
    assert sms_to(simulator, number) == [] and states(sessions, code) == {"payment": "pending"}
