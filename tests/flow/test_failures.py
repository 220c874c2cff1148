"""The failure model (docs/design.md §4) for the C2B path: Redis gone at the ack, a worker killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from db import ledger
from db.models import Driver, Inbox, Payout, Posting
from tests.support import TOKEN, add_driver_with_vehicle, c2b_body, next_driver_code, next_receipt, pending_count, serve, wait_until



def sweep(older_than_s: int) -> int:
    """One inbox sweep, as the scheduler's ``sweep_inbox`` runs it."""
    from workers import runtime
    from workers.sweep_inbox import enqueue_stale_inbox_rows

    return enqueue_stale_inbox_rows(runtime.sessions(), runtime.settings, older_than_s=older_than_s)

def test_redis_unreachable_at_the_ack_is_swept_later(settings, engine, sessions, worker) -> None:  # type: ignore[no-untyped-def]
    from ingest.app import build_app
    from workers.broker import build_broker

    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code)
    no_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    receipt = next_receipt("R")
    with serve(build_app(no_redis, engine=engine, broker=build_broker(no_redis))) as url:
        answer = httpx.post(f"{url}/cb/{TOKEN}/c2b/confirm", json=c2b_body(receipt, "400.00", vehicle), timeout=10)
    assert answer.json() == {"ResultCode": 0, "ResultDesc": "Success"}
    assert pending_count(sessions, [receipt]) == 1  # durable, but nobody was told

    assert sweep(older_than_s=0) >= 1
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the swept payment")
    with sessions() as session:
        driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
        assert ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).target) == 20_000


def test_worker_killed_mid_batch_applies_each_payment_once(settings, engine, sessions, database_url, redis_url) -> None:  # type: ignore[no-untyped-def]
    """A worker process is SIGKILLed while it works through 300 payments; after a restart and a
    sweep, each payment is applied exactly once."""
    from ingest.app import build_app

    codes = [next_driver_code() for _ in range(10)]
    vehicles = []
    with sessions.begin() as session:
        for code in codes:
            vehicles.append(add_driver_with_vehicle(session, driver_code=code, fare_percent=40))
    queue = "fleetpay_kill_test"
    own = settings.model_copy(update={"queue_name": queue})
    env = {**os.environ, "FLEETPAY_DATABASE_URL": database_url, "FLEETPAY_REDIS_URL": redis_url,
           "FLEETPAY_QUEUE_NAME": queue, "FLEETPAY_LOG_LEVEL": "WARNING"}

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "workers.all", "--processes", "1", "--threads", "4", "--queues", queue],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    from workers import runtime

    receipts = [next_receipt("K") for _ in range(300)]
    bodies = [c2b_body(r, f"{100 + i % 7 * 10}.00", vehicles[i % 10]) for i, r in enumerate(receipts)]
    with serve(build_app(own, engine=engine, broker=runtime.broker)) as url:
        with httpx.Client(base_url=f"{url}/cb/{TOKEN}", timeout=30) as http, ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda b: http.post("c2b/confirm", json=b).status_code, bodies)) == {200}
    first = start_worker()
    wait_until(lambda: pending_count(sessions, receipts) < 250, timeout_s=60, what="the worker to start")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    left = pending_count(sessions, receipts)
    assert 0 < left < 300, "the kill should land mid-batch"

    second = start_worker()
    try:
        # Messages the dead worker held are recovered by the sweeper, which the scheduler runs
        # periodically; here every 2 s. One sweep is not enough: it skips a row whose lock the
        # killed worker's PostgreSQL backend still holds until it notices its client is gone.
        deadline = time.monotonic() + 90
        while pending_count(sessions, receipts):
            assert time.monotonic() < deadline, "timed out waiting for the restarted worker and the sweeps"
            sweep(older_than_s=0)
            time.sleep(2)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)

    with sessions() as session:
        keys = [f"c2b:{r}" for r in receipts]
        assert session.execute(select(func.count()).where(Posting.idempotency_key.in_(keys))).scalar_one() == 300
        assert session.execute(
            select(func.count()).select_from(Inbox).where(Inbox.external_id.in_(receipts), Inbox.status == "processed")
        ).scalar_one() == 300
        for code in codes:
            driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
            accounts = ledger.driver_accounts(session, driver_id)
            received = sum(int(b["TransAmount"][:-3]) * 100 for b in bodies if b["BillRefNumber"] == vehicles[codes.index(code)])
            payouts = session.execute(
                select(func.coalesce(func.sum(Payout.amount_cents), 0)).where(Payout.driver_id == driver_id)
            ).scalar_one()
            held = ledger.balance_cents(session, accounts.payable) + payouts + ledger.balance_cents(session, accounts.target)
            assert held == received, code
