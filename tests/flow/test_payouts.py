"""B2C payouts against the Daraja simulator: each fault mode on its own, then a 30 % mix over 500
payouts. What was paid is asserted against the simulator's own record, not our database."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from db import ledger
from db.models import Entry, Payout, Posting
from tests.support import TOKEN, add_driver_with_vehicle, c2b_body, next_driver_code, next_receipt, pending_count, wait_until


def sim_payments(simulator: str) -> Counter[str]:
    """How many times the simulator paid each OriginatorConversationID."""
    payments = httpx.get(f"{simulator}/sim/payments", timeout=10).json()["payments"]
    return Counter(p["originator_conversation_id"] for p in payments)


def queue_faults(simulator: str, *faults: dict) -> None:
    response = httpx.post(f"{simulator}/sim/faults", json=list(faults), timeout=10)
    assert response.status_code == 201, response.text


def settle(sessions, payout_ids: list[int], *, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Run payout sweeps (as the scheduler would, with no age limits) until all are terminal."""
    from workers import runtime
    from workers.sweep_payouts import advance_open_payouts

    def all_terminal() -> bool:
        with sessions() as session:
            open_ = session.execute(
                select(func.count()).where(Payout.id.in_(payout_ids), Payout.state.not_in(("paid", "failed")))
            ).scalar_one()
        if open_:
            advance_open_payouts(runtime.sessions(), runtime.settings, age_s=1)
        return open_ == 0

    wait_until(all_terminal, timeout_s=timeout_s, what="every payout to be paid or failed")


def in_flight_left(sessions, payout_ids: list[int]) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        in_flight = ledger.system_accounts(session).payouts_in_flight
        return session.execute(
            select(func.coalesce(func.sum(Entry.amount_cents), 0))
            .join(Posting, Posting.id == Entry.posting_id)
            .where(Posting.payout_id.in_(payout_ids), Entry.account_id == in_flight)
        ).scalar_one()


def pay_fares(ingest_url: str, sessions, vehicle: str, count: int, amount: str = "100.00") -> list[int]:  # type: ignore[no-untyped-def]
    receipts = [next_receipt("P") for _ in range(count)]
    with httpx.Client(base_url=f"{ingest_url}/cb/{TOKEN}", timeout=30) as http, ThreadPoolExecutor(8) as pool:
        codes = set(pool.map(lambda r: http.post("c2b/confirm", json=c2b_body(r, amount, vehicle)).status_code, receipts))
    assert codes == {200}
    wait_until(lambda: pending_count(sessions, receipts) == 0, timeout_s=60, what="the fares")
    with sessions() as session:
        return list(
            session.execute(
                select(Payout.id).where(Payout.cause_key.in_([f"share:c2b:{r}" for r in receipts])).order_by(Payout.id)
            ).scalars()
        )


FAULTS = [
    # (fault, expected end state)
    ({"mode": "http_timeout_after_accept", "hang_s": 3}, "paid"),
    ({"mode": "http_timeout_after_accept", "hang_s": 3, "close_connection": True}, "paid"),
    ({"mode": "http_5xx"}, "paid"),
    ({"mode": "spike_arrest"}, "paid"),
    ({"mode": "result_failure", "result_code": 2040}, "failed"),
    ({"mode": "result_failure", "result_code": 1}, "failed"),
    ({"mode": "queue_timeout"}, "paid"),
    ({"mode": "duplicate_result", "copies": 3, "concurrent": True}, "paid"),
    ({"mode": "result_before_response"}, "paid"),
    ({"mode": "drop_callback"}, "paid"),
    ({"mode": "slow_callback", "delay_ms": 1500}, "paid"),
]


@pytest.mark.parametrize(("fault", "end"), FAULTS, ids=[f"{f['mode']}-{i}" for i, (f, _) in enumerate(FAULTS)])
def test_each_fault_alone(ingest_url, simulator, worker, sessions, driver, fault, end) -> None:  # type: ignore[no-untyped-def]
    code, vehicle = driver
    queue_faults(simulator, fault)
    [payout_id] = pay_fares(ingest_url, sessions, vehicle, 1)
    settle(sessions, [payout_id])

    with sessions() as session:
        payout = session.get(Payout, payout_id)
        accounts = ledger.driver_accounts(session, payout.driver_id)
        payable_cents = ledger.balance_cents(session, accounts.payable)
    paid = sim_payments(simulator)[payout.originator_conversation_id]
    assert (payout.state, paid) == (end, 1 if end == "paid" else 0)
    assert in_flight_left(sessions, [payout_id]) == 0
    # A failed payout's money is owed to the driver again; a paid one has left.
    assert payable_cents == (5_000 if end == "failed" else 0)


def test_unknown_payout_is_never_paid_twice_when_the_answer_and_the_callback_are_lost(
    ingest_url, simulator, worker, sessions, driver
) -> None:  # type: ignore[no-untyped-def]
    """Paid, no HTTP answer, no callback: only Transaction Status can tell, and it must say paid."""
    code, vehicle = driver
    queue_faults(simulator, {"mode": "http_timeout_after_accept", "hang_s": 3}, {"mode": "drop_callback"})
    [payout_id] = pay_fares(ingest_url, sessions, vehicle, 1)
    wait_until(lambda: _state(sessions, payout_id) == "unknown", what="the payout to be unknown")
    settle(sessions, [payout_id])
    with sessions() as session:
        payout = session.get(Payout, payout_id)
    assert payout.state == "paid" and payout.receipt
    assert sim_payments(simulator)[payout.originator_conversation_id] == 1


def _state(sessions, payout_id: int) -> str:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return session.get(Payout, payout_id).state


def test_five_hundred_payouts_with_thirty_percent_faults(ingest_url, simulator, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(4)
    modes = [
        {"mode": "http_timeout_after_accept", "hang_s": 2},
        {"mode": "http_5xx"},
        {"mode": "spike_arrest"},
        {"mode": "result_failure", "result_code": 2001},
        {"mode": "queue_timeout"},
        {"mode": "duplicate_result"},
        {"mode": "result_before_response"},
        {"mode": "drop_callback"},
        {"mode": "slow_callback", "delay_ms": 500},
    ]
    queue_faults(simulator, *(rng.choice(modes) for _ in range(150)))
    vehicles = []
    with sessions.begin() as session:
        for n in range(10):
            vehicles.append(add_driver_with_vehicle(session, driver_code=next_driver_code(), msisdn=f"25473{n:07d}"))
    payout_ids = [p for vehicle in vehicles for p in pay_fares(ingest_url, sessions, vehicle, 50, amount="60.00")]
    assert len(payout_ids) == 500
    settle(sessions, payout_ids, timeout_s=240)

    paid_by_simulator = sim_payments(simulator)
    with sessions() as session:
        payouts = session.execute(select(Payout).where(Payout.id.in_(payout_ids))).scalars().all()
        total = session.execute(select(func.sum(Entry.amount_cents))).scalar_one()
    assert {p.state for p in payouts} <= {"paid", "failed"}
    assert all(paid_by_simulator[p.originator_conversation_id] == (1 if p.state == "paid" else 0) for p in payouts)
    assert max(paid_by_simulator.values()) == 1  # nobody, ever, paid twice
    assert sum(p.state == "failed" for p in payouts) > 0 and sum(p.state == "paid" for p in payouts) > 400
    assert in_flight_left(sessions, payout_ids) == 0
    assert total == 0  # the whole ledger still balances
