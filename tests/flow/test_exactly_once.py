"""The same payment, delivered many times at once to many workers, changes balances once; a
mixed, shuffled stream of 1,000 callbacks matches an independent model of docs/rules.md."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import httpx
from sqlalchemy import func, select

from db import fleet, ledger
from db.models import Driver, DriverDay, Entry, Inbox, Payout, Posting
from tests.support import (
    TOKEN,
    add_driver_with_vehicle,
    c2b_body,
    next_driver_code,
    next_receipt,
    next_vehicle_code,
    pending_count,
    wait_until,
)


def test_fifty_concurrent_deliveries_post_once(ingest_url, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code, msisdn="254711000001")
    receipt = next_receipt("C")
    body = json.dumps(c2b_body(receipt, "300.00", vehicle)).encode()

    def deliver(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            return client.post(
                f"{ingest_url}/cb/{TOKEN}/c2b/confirm", content=body, headers={"content-type": "application/json"}
            ).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        assert set(pool.map(deliver, range(50))) == {200}
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the payment")

    with sessions() as session:
        driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
        assert session.execute(select(func.count()).select_from(Inbox).where(Inbox.external_id == receipt)).scalar_one() == 1
        assert session.execute(select(func.count()).where(Posting.idempotency_key == f"c2b:{receipt}")).scalar_one() == 1
        payouts = session.execute(select(Payout.amount_cents).where(Payout.driver_id == driver_id)).scalars().all()
        assert payouts == [15_000]
        accounts = ledger.driver_accounts(session, driver_id)
        assert ledger.balance_cents(session, accounts.target) == 15_000
        assert ledger.balance_cents(session, accounts.payable) == 0


class FleetModel:
    """An independent model of docs/rules.md (defaults: whole-payment split, target sharing on,
    instant payouts, KES 10 minimum), replayed in the order the workers committed."""

    def __init__(self) -> None:
        self.contributed: dict[tuple[str, date], int] = defaultdict(int)
        self.payable: dict[str, int] = defaultdict(int)
        self.deposit: dict[str, int] = defaultdict(int)
        self.target_account: dict[str, int] = defaultdict(int)
        self.payouts: dict[str, int] = defaultdict(int)

    def fare(self, driver: str, day: date, amount: int, *, percent: int, target: int, substitute: bool) -> None:
        met = self.contributed[(driver, day)] >= target
        if met and not substitute:
            share = amount // 100 * 100
        else:
            share = amount * percent // 100 // 100 * 100
        self._contribute(driver, day, amount - share)
        self.payable[driver] += share
        if share and self.payable[driver] >= 1_000:
            out = self.payable[driver] // 100 * 100
            self.payable[driver] -= out
            self.payouts[driver] += out

    def driver_pays(self, driver: str, day: date, amount: int, *, target: int) -> None:
        towards = min(max(0, target - self.contributed[(driver, day)]), amount)
        self._contribute(driver, day, towards)
        self.deposit[driver] += amount - towards

    def _contribute(self, driver: str, day: date, cents: int) -> None:
        self.contributed[(driver, day)] += cents
        self.target_account[driver] += cents


def test_a_thousand_mixed_callbacks_match_the_model(ingest_url, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(2026)
    drivers: dict[str, dict] = {}
    with sessions.begin() as session:
        for n in range(100):
            code = next_driver_code()
            terms = {"substitute": n % 10 == 0, "percent": rng.choice([30, 50, 70]), "target": rng.choice([50_000, 300_000])}
            vehicle = add_driver_with_vehicle(
                session,
                driver_code=code,
                msisdn=f"2547{n:08d}",
                substitute=terms["substitute"],
                fare_percent=terms["percent"],
                daily_target_cents=terms["target"],
            )
            drivers[code] = {**terms, "vehicle": vehicle}
        empty_vehicle = next_vehicle_code()  # a vehicle with no driver: its fares go to suspense
        fleet.add_vehicle(session, empty_vehicle)

    codes = list(drivers)
    callbacks: list[tuple[str, dict]] = []  # (kind, body)
    times = ["20261124235958", "20261125000002"]  # two business days around midnight EAT
    for _ in range(830):
        receipt = next_receipt("M")
        roll = rng.random()
        amount = f"{rng.randint(10, 1_500)}.00"
        when = rng.choice(times)
        if roll < 0.75:
            code = rng.choice(codes)
            account = drivers[code]["vehicle"].lstrip("0") if rng.random() < 0.3 else drivers[code]["vehicle"]
        elif roll < 0.9:
            account = f" {rng.choice(codes).lower()} "  # a driver paying, typed sloppily
        elif roll < 0.95:
            account = "NOSUCH1"
        else:
            account = empty_vehicle
        callbacks.append(("c2b/confirm", c2b_body(receipt, amount, account, at=when)))
    callbacks += rng.sample(callbacks, 170)  # 20 % duplicates
    rng.shuffle(callbacks)
    assert len(callbacks) == 1_000

    def deliver(item: tuple[str, dict]) -> int:
        """As M-Pesa delivers: a callback that got no answer at all (a kept-alive connection the
        server closed as it was reused) is sent again, which the model allows: any number of times."""
        route, body = item
        for attempt in range(3):
            try:
                return http_client.post(route, json=body).status_code
            except httpx.TransportError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    with httpx.Client(base_url=f"{ingest_url}/cb/{TOKEN}", timeout=30) as http_client, ThreadPoolExecutor(16) as pool:
        assert set(pool.map(deliver, callbacks)) == {200}
    receipts = sorted({body["TransID"] for _, body in callbacks})
    wait_until(lambda: pending_count(sessions, receipts) == 0, timeout_s=120, what="all callbacks")

    # Replay the distinct payments through the model in the order they were committed.
    with sessions() as session:
        order = session.execute(
            select(Posting.idempotency_key, Posting.kind, Driver.code)
            .join(Driver, Driver.id == Posting.driver_id, isouter=True)
            .where(Posting.idempotency_key.in_([f"c2b:{r}" for r in receipts]))
            .order_by(Posting.id)
        ).all()
        assert len(order) == len(receipts)  # every distinct receipt posted exactly once
        by_receipt = {body["TransID"]: body for _, body in callbacks}
        model = FleetModel()
        suspense_cents = 0
        for key, kind, code in order:
            body = by_receipt[key.removeprefix("c2b:")]
            amount = int(body["TransAmount"].removesuffix(".00")) * 100
            day = date(2026, 11, 24) if body["TransTime"].startswith("20261124") else date(2026, 11, 25)
            if kind == "unmatched":
                suspense_cents += amount
            elif kind == "driver_payment":
                model.driver_pays(code, day, amount, target=drivers[code]["target"])
            else:
                terms = drivers[code]
                model.fare(code, day, amount, percent=terms["percent"], target=terms["target"], substitute=terms["substitute"])

        for code in codes:
            driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
            accounts = ledger.driver_accounts(session, driver_id)
            assert ledger.balance_cents(session, accounts.payable) == model.payable[code], code
            assert ledger.balance_cents(session, accounts.deposit) == model.deposit[code], code
            assert ledger.balance_cents(session, accounts.target) == model.target_account[code], code
            paid_out = session.execute(
                select(func.coalesce(func.sum(Payout.amount_cents), 0)).where(Payout.driver_id == driver_id)
            ).scalar_one()
            assert paid_out == model.payouts[code], code
            for day in (date(2026, 11, 24), date(2026, 11, 25)):
                row = session.get(DriverDay, (driver_id, day))
                assert (row.contributed_cents if row else 0) == model.contributed[(code, day)], (code, day)
            # Every cached balance equals the sum of its entries.
            for account_id in (accounts.payable, accounts.deposit, accounts.target):
                summed = session.execute(
                    select(func.coalesce(func.sum(Entry.amount_cents), 0)).where(Entry.account_id == account_id)
                ).scalar_one()
                assert summed == ledger.balance_cents(session, account_id)
        unmatched = session.execute(
            select(func.count()).select_from(Inbox).where(Inbox.external_id.in_(receipts), Inbox.status == "unmatched")
        ).scalar_one()
        assert unmatched == sum(1 for _, kind, _ in order if kind == "unmatched")
        assert suspense_cents > 0
        assert session.execute(select(func.sum(Entry.amount_cents))).scalar_one() == 0
