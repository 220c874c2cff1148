"""Every callback sample of tests/samples is accepted and has the right effect."""

from __future__ import annotations

import json
from datetime import date

from sqlalchemy import select

from db import fleet
from db.balances import driver_balance
from db.models import Inbox, Payout, Posting
from tests.support import SAMPLES, add_driver_with_vehicle, open_payouts, wait_until


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def post(http, route: str, name: str) -> dict:  # type: ignore[no-untyped-def]
    response = http.post(route, content=sample(name), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def status_of(sessions, kind: str, external_id: str) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    """The inbox row of a callback, by its id (results are keyed ``<id>#<body digest>``)."""
    with sessions() as session:
        status, reason = session.execute(
            select(Inbox.status, Inbox.reason).where(
                Inbox.kind == kind,
                (Inbox.external_id == external_id) | Inbox.external_id.startswith(f"{external_id}#", autoescape=True),
            )
        ).one()
    return status, reason


def test_every_sample_callback(http, worker, sessions, settings) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        # c2b_confirmation pays vehicle 025; the hashed-MSISDN sample is driver D112006 paying;
        # the STK sample is paid from 254708374149, the number of driver D112007.
        add_driver_with_vehicle(session, driver_code="D112006", vehicle_code="025", msisdn="254705912645")
        add_driver_with_vehicle(session, driver_code="D112007", vehicle_code="026", msisdn="254708374149")

    # Validation: account 114 is unknown; then it becomes a vehicle with a driver.
    assert post(http, "c2b/validate", "c2b_validation.json") == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}

    assert post(http, "c2b/confirm", "c2b_confirmation.json") == {"ResultCode": 0, "ResultDesc": "Success"}
    assert post(http, "c2b/confirm", "c2b_confirmation_driver_id_v1_hashed.json")["ResultCode"] == 0
    assert post(http, "stk/result", "stk_callback_success.json")["ResultCode"] == 0
    assert post(http, "stk/result", "stk_callback_cancelled.json")["ResultCode"] == 0
    for route, name in [
        ("b2c/result", "b2c_result_success.json"),
        ("b2c/result", "b2c_result_failure.json"),
        ("b2c/timeout", "b2c_queue_timeout.json"),
        ("status/result", "transaction_status_result.json"),
        ("balance/result", "account_balance_result.json"),
    ]:
        assert post(http, route, name)["ResultCode"] == 0

    wait_until(lambda: status_of(sessions, "c2b_confirmation", "SHK3QX7T2M")[0] != "received", what="fare")
    wait_until(lambda: status_of(sessions, "c2b_confirmation", "SHK4AB9Z1Q")[0] != "received", what="driver pay")
    wait_until(lambda: status_of(sessions, "stk_result", "ws_CO_191220191020363925")[0] != "received", what="stk")
    wait_until(lambda: status_of(sessions, "stk_result", "ws_CO_21072024125243250722943992")[0] != "received", what="stk")

    wait_until(lambda: open_payouts(sessions, "D112006") == 0, what="the driver's share to be paid")
    with sessions() as session:
        # 200 KES fare at 50 %: 100 to the driver (paid out: above the KES 10 minimum), 100 to the target.
        fare = driver_balance(session, "D112006", date(2024, 8, 15), settings)
        assert fare["contributed_cents"] == 10_000 + 100_000  # the fare's half plus the driver's own 1,000
        assert (fare["payable_cents"], fare["in_flight_cents"], fare["paid_out_cents"]) == (0, 0, 10_000)
        assert fare["deposit_cents"] == 0
        payout = session.execute(select(Payout).where(Payout.cause_key == "share:c2b:SHK3QX7T2M")).scalar_one()
        assert (payout.amount_cents, payout.state, payout.msisdn) == (10_000, "paid", "254705912645")
        assert payout.receipt

        # STK: recorded; its money is posted by the C2B confirmation of the same receipt.
        assert session.execute(select(Posting.id).where(Posting.idempotency_key == "c2b:NLJ7RT61SV")).first() is None
    assert status_of(sessions, "stk_result", "ws_CO_191220191020363925") == (
        "processed", "stk_paid:NLJ7RT61SV:applied_by_c2b_confirmation"
    )
    assert status_of(sessions, "stk_result", "ws_CO_21072024125243250722943992") == ("processed", "stk_failed:1032")
    # The B2C and status samples name payouts fleetpay never made, and a query it never sent: kept,
    # and refused as not ours.
    for kind, external_id, reason in [
        ("b2c_result", "po_01J5Z7K2M9", "unknown_payout"),
        ("b2c_result", "po_01J5Z7K2MA", "unknown_payout"),
        ("b2c_timeout", "timeout:po_01J5Z7K2MB", "unknown_payout"),
        ("status_result", "ts_01J5Z9Q4R2", "unknown_query"),
        ("balance_result", "9209-8162043-1", "unknown_query"),
    ]:
        wait_until(lambda: status_of(sessions, kind, external_id)[0] != "received", what=kind)
        assert status_of(sessions, kind, external_id) == ("rejected", reason)

    # The paybill's C2B confirmation for the STK receipt posts it, once: D112007 paid the company.
    confirmation = json.loads(sample("c2b_confirmation.json")) | {
        "TransID": "NLJ7RT61SV", "TransAmount": "1.00", "BillRefNumber": "D112007", "TransTime": "20191219102115"
    }
    assert http.post("c2b/confirm", json=confirmation).json()["ResultCode"] == 0
    wait_until(lambda: status_of(sessions, "c2b_confirmation", "NLJ7RT61SV")[0] != "received", what="stk's c2b")
    with sessions() as session:
        assert driver_balance(session, "D112007", date(2019, 12, 19), settings)["contributed_cents"] == 100

    # The validation sample's account becomes valid once vehicle 114 has a driver.
    with sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code="D112008", vehicle_code="114")
    body = json.loads(sample("c2b_validation.json"))
    body["TransID"] = "SHK3QX7T2P"
    body["TransTime"] = "20240815143101"
    response = http.post("c2b/validate", json=body)
    assert response.json()["ResultCode"] in ("0", settings.validation_operating_hours_code)
    with sessions() as session:
        assert fleet.payee_for_vehicle(session, "114") is not None
