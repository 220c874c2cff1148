"""Results about a payout arrive forged, late, twice and in any order: none pays a driver twice.

Each test holds the simulator's real result back (``slow_callback``), lets the payout be sent,
posts what an attacker (or a confused M-Pesa) would post to our public callback URLs, and then lets
the real result arrive. After each: the simulator's own record of what M-Pesa paid equals what the
ledger booked as paid out, the driver is never paid more than owed, and every disagreement is
visible in ``fleetpay payouts list`` and ``fleetpay reconcile``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db import ledger
from db.balances import driver_balance
from db.models import Inbox, Payout, PayoutStatusQuery
from tests.flow.test_payouts import pay_fares, queue_faults, settle, sim_payments
from tests.support import SAMPLES, TOKEN, add_driver_with_vehicle, approve_request, fleetpay, next_driver_code, two_people, wait_until

MSISDN = "254722000444"
SHARE_CENTS = 5_000  # half of a KES 100 fare


def b2c_body(payout: Payout, *, code: int = 0, amount: Any = 50, receiver: str | None = None,
             conversation_id: str | None = None, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A B2C result about ``payout``, shaped like Safaricom's (tests/samples)."""
    name = "b2c_result_success.json" if code == 0 else "b2c_result_failure.json"
    body = json.loads((SAMPLES / name).read_text())
    result = body["Result"]
    result.update(ResultCode=code, OriginatorConversationID=payout.originator_conversation_id,
                  ConversationID=conversation_id or payout.conversation_id or "AG_forged")
    if code == 0:
        params = result["ResultParameters"]["ResultParameter"]
        values = {"TransactionAmount": amount, "ReceiverPartyPublicName": receiver or f"{MSISDN} - DRIVER"}
        params[:] = [{"Key": p["Key"], "Value": values.get(p["Key"], p["Value"])} for p in params if p["Key"] not in drop]
    return body


def status_body(payout: Payout, *, query_id: str, status: str = "Declined", amount: str = "50") -> dict[str, Any]:
    body = json.loads((SAMPLES / "transaction_status_result.json").read_text())
    result = body["Result"]
    result["OriginatorConversationID"] = query_id
    values = {"OriginatorConversationID": payout.originator_conversation_id, "TransactionStatus": status,
              "Amount": amount, "CreditPartyName": f"{MSISDN} - DRIVER"}
    params = result["ResultParameters"]["ResultParameter"]
    params[:] = [{"Key": p["Key"], "Value": values.get(p["Key"], p["Value"])} for p in params]
    return body


@pytest.fixture
def driver(sessions):  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code, msisdn=MSISDN)
    return code, vehicle


def payout_of(sessions, payout_id: int) -> Payout:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return session.get(Payout, payout_id)


def held_payout(ingest_url: str, simulator: str, sessions, vehicle: str, *, hold_ms: int = 4_000) -> Payout:  # type: ignore[no-untyped-def]
    """A payout sent and accepted, whose real (successful) result the simulator holds back."""
    queue_faults(simulator, {"mode": "slow_callback", "delay_ms": hold_ms})
    [payout_id] = pay_fares(ingest_url, sessions, vehicle, 1)
    # Accepted, or already paid when the hold is short: never wait for a state that may be skipped.
    wait_until(lambda: payout_of(sessions, payout_id).state in ("submitted", "paid"), what="the payout to be accepted")
    return payout_of(sessions, payout_id)


def post(ingest_url: str, route: str, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{ingest_url}/cb/{TOKEN}/{route}", json=body, timeout=10)
    assert answer.json()["ResultCode"] == 0


def handled(sessions, payout: Payout, kind: str, count: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``count`` rows of ``kind`` about the payout have been handled by a worker."""
    def done() -> bool:
        with sessions() as session:
            rows = session.execute(select(Inbox.status).where(
                Inbox.kind == kind, Inbox.status != "received",
                Inbox.body.contains(payout.originator_conversation_id))).all()
        return len(rows) >= count
    wait_until(done, what=f"{count} {kind} about payout {payout.id}")


def assert_paid_once(simulator: str, sessions, settings, payout: Payout, code: str) -> None:  # type: ignore[no-untyped-def]
    """M-Pesa's record and the books agree: paid once, nothing owed, nothing more."""
    assert sim_payments(simulator)[payout.originator_conversation_id] == 1
    now = payout_of(sessions, payout.id)
    assert now.state == "paid" and now.settled_by_inbox_id is not None
    with sessions() as session:
        balance = driver_balance(session, code, now.created_at.date(), settings)
    assert (balance["paid_out_cents"], balance["payable_cents"], balance["in_flight_cents"]) == (SHARE_CENTS, 0, 0)


def listed(database_url: str, payout_id: int) -> dict[str, Any]:
    [row] = [p for p in json.loads(fleetpay("payouts", "list", "--json", database_url=database_url).stdout)["payouts"]
             if p["id"] == payout_id]
    return row


def reconciled(database_url: str) -> dict[str, Any]:
    return json.loads(fleetpay("reconcile", "--json", database_url=database_url, check=False).stdout)


def test_forged_failure_then_the_real_success_pays_once(ingest_url, simulator, worker, sessions, settings, driver) -> None:  # type: ignore[no-untyped-def]
    code, vehicle = driver
    payout = held_payout(ingest_url, simulator, sessions, vehicle)
    post(ingest_url, "b2c/result", b2c_body(payout, code=2001))
    handled(sessions, payout, "b2c_result")
    # A failure only reports: the money stays in flight, nothing is payable again.
    assert payout_of(sessions, payout.id).state == "failure_reported"
    with sessions() as session:
        assert ledger.balance_cents(session, ledger.driver_accounts(session, payout.driver_id).payable) == 0
    settle(sessions, [payout.id])  # our own status query, or the real result, settles it
    assert_paid_once(simulator, sessions, settings, payout, code)
    # The next fare pays only the next share.
    [second] = pay_fares(ingest_url, sessions, vehicle, 1)
    settle(sessions, [second])
    assert payout_of(sessions, second).amount_cents == SHARE_CENTS


def test_real_success_then_a_forged_failure_changes_nothing(ingest_url, simulator, worker, sessions, settings, driver) -> None:  # type: ignore[no-untyped-def]
    code, vehicle = driver
    payout = held_payout(ingest_url, simulator, sessions, vehicle, hold_ms=10)
    settle(sessions, [payout.id])
    post(ingest_url, "b2c/result", b2c_body(payout, code=2001))
    handled(sessions, payout, "b2c_result", count=2)  # both bodies kept
    assert_paid_once(simulator, sessions, settings, payout, code)


def test_a_success_callback_for_a_failed_payout_books_nothing_and_is_asked_about(
    ingest_url, simulator, worker, sessions, settings, driver, database_url
) -> None:  # type: ignore[no-untyped-def]
    """A real failure (confirmed by our own status query) is retried and paid; then a success
    callback naming the failed payout arrives. Once failed, only our own status query may book a
    payment: the callback books nothing, flags the payout, and asks; M-Pesa's answer (declined)
    keeps it failed, and the payout keeps the disagreement visible for a person."""
    code, vehicle = driver
    queue_faults(simulator, {"mode": "result_failure", "result_code": 2001})
    [failed_id] = pay_fares(ingest_url, sessions, vehicle, 1)
    settle(sessions, [failed_id])
    failed = payout_of(sessions, failed_id)
    assert (failed.state, failed.result_code, failed.status_result_code) == ("failed", "2001", "0")
    asker, approver = two_people(sessions)
    approve_request(fleetpay("payouts", "retry", str(failed_id), "--reason", "proven unpaid", "--user", asker,
                             database_url=database_url), approver, database_url)
    with sessions() as session:
        retried = session.execute(select(Payout.id).where(Payout.cause_key == f"retry:{failed_id}")).scalar_one()
    settle(sessions, [retried])

    post(ingest_url, "b2c/result", b2c_body(failed))  # matches our ids, the amount, the driver
    handled(sessions, failed, "b2c_result", count=2)
    wait_until(lambda: _status_queries(sessions, failed_id) == 2, what="a second status query about it")
    handled(sessions, failed, "status_result", count=2)
    row = listed(database_url, failed_id)
    assert (row["state"], row["review_reason"]) == ("failed", "success_after_failure")
    with sessions() as session:
        balance = driver_balance(session, code, failed.created_at.date(), settings)
    assert (balance["paid_out_cents"], balance["payable_cents"]) == (SHARE_CENTS, 0)  # paid once, by the retry
    assert sim_payments(simulator)[failed.originator_conversation_id] == 0
    # M-Pesa's own answer to our later query settled the disagreement: not a discrepancy any more.
    assert str(failed_id) not in [d["subject"] for d in reconciled(database_url)["discrepancies"]]


def _status_queries(sessions, payout_id: int) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return len(session.execute(select(PayoutStatusQuery).where(PayoutStatusQuery.payout_id == payout_id)).all())


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        (lambda p: ("b2c/result", b2c_body(p, receiver="254799999999 - SOMEONE ELSE")), "receiver_differs"),
        (lambda p: ("b2c/result", b2c_body(p, amount=5_100)), "amount_differs:510000"),
        (lambda p: ("b2c/result", b2c_body(p, drop=("TransactionAmount",))), "amount_missing"),
        (lambda p: ("status/result", status_body(p, query_id=f"ts_forged_{p.id}")), "status_for_a_query_we_never_sent"),
        (lambda p: ("status/result", status_body(p, query_id=f"ts_forged_{p.id}", status="Completed", amount="5100")),
         "status_for_a_query_we_never_sent"),
    ],
    ids=["other-receiver", "other-amount", "no-amount", "status-declined-for-a-query-never-sent",
         "status-completed-for-a-query-never-sent"],
)
def test_a_result_that_does_not_match_what_we_asked_moves_no_money_and_goes_to_review(
    ingest_url, simulator, worker, sessions, settings, driver, database_url, forgery, reason
) -> None:  # type: ignore[no-untyped-def]
    """A B2C result that names the payout without matching what we asked sends it to review; a
    status answer to a query we never sent proves nothing, so it only flags the payout (moving it
    would let anyone who knows a payout's id stop it). No money moves; the real result settles it."""
    code, vehicle = driver
    payout = held_payout(ingest_url, simulator, sessions, vehicle, hold_ms=6_000)
    route, body = forgery(payout)
    post(ingest_url, route, body)
    handled(sessions, payout, "b2c_result" if route == "b2c/result" else "status_result")
    now = payout_of(sessions, payout.id)
    if now.state != "paid":  # judged before the real result came
        row = listed(database_url, payout.id)
        assert row["review_reason"] == reason
        if route == "b2c/result":
            assert row["state"] == "review"
            assert any(d["kind"] == "payout_in_review" for d in reconciled(database_url)["discrepancies"])
        else:
            assert row["state"] == "submitted"
        with sessions() as session:  # no money moved: still in flight
            assert driver_balance(session, code, payout.created_at.date(), settings)["in_flight_cents"] == SHARE_CENTS
    # The real success still settles it, once.
    wait_until(lambda: payout_of(sessions, payout.id).state == "paid", timeout_s=30, what="the real result")
    assert_paid_once(simulator, sessions, settings, payout, code)
    assert listed(database_url, payout.id)["review_reason"] == reason  # the evidence stays visible


def test_result_before_the_http_answer_and_timeout_then_success(ingest_url, simulator, worker, sessions, settings, driver) -> None:  # type: ignore[no-untyped-def]
    code, vehicle = driver
    queue_faults(simulator, {"mode": "result_before_response"}, {"mode": "queue_timeout"})
    payout_ids = pay_fares(ingest_url, sessions, vehicle, 2)
    settle(sessions, payout_ids)
    paid = sim_payments(simulator)
    for payout_id in payout_ids:
        payout = payout_of(sessions, payout_id)
        assert payout.state == "paid" and paid[payout.originator_conversation_id] == 1
    with sessions() as session:
        balance = driver_balance(session, code, payout.created_at.date(), settings)
    assert (balance["paid_out_cents"], balance["payable_cents"]) == (2 * SHARE_CENTS, 0)


def test_a_different_second_body_for_one_receipt_is_kept_and_listed_and_applied_once(http, worker, sessions, driver, database_url) -> None:  # type: ignore[no-untyped-def]
    from tests.support import c2b_body, next_receipt, pending_count

    code, vehicle = driver
    receipt = next_receipt("C")
    bodies = [c2b_body(receipt, f"{100 + n}.00", vehicle) for n in range(5)]
    assert {http.post("c2b/confirm", json=body).status_code for body in bodies + bodies} == {200}
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the receipt")
    with sessions() as session:
        rows = session.execute(select(Inbox.external_id, Inbox.status).where(Inbox.external_id.startswith(receipt))).all()
    assert sorted(status for _, status in rows) == ["conflict"] * 4 + ["processed"]
    conflicts = json.loads(fleetpay("inbox", "list", "--status", "conflict", "--json", database_url=database_url).stdout)
    assert len([r for r in conflicts["inbox"] if r["external_id"].startswith(f"{receipt}#")]) == 4
    with sessions() as session:
        first_amount = json.loads(session.execute(
            select(Inbox.body).where(Inbox.external_id == receipt)).scalar_one())["TransAmount"]
    assert first_amount in {body["TransAmount"] for body in bodies}
