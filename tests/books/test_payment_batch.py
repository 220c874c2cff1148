"""Batched application (``money.callbacks.apply_callbacks``): the same books as one row at a time,
a bad row set aside without holding up its batch, duplicates inside and across batches applied once.

The model is the one-row path (``apply_callback``, what every worker ran before batching): two
identical fleets receive the same payments, one fleet's rows applied in batches, the other's one
at a time, and every driver's books must come out the same.
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import date

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import func, select, text

from db import fleet
from db.models import Account, DriverDay, Inbox, Notification, Payout, Posting
from fleetpay.settings import Settings
from money.callbacks import apply_callback, apply_callbacks
from tests.support import add_driver_with_vehicle, c2b_body, next_driver_code, next_receipt

CONFIG = Settings(database_url="postgresql://unused/x", daily_target_cents=100_000, b2c_minimum_cents=1_000)
WIDE = CONFIG.model_copy(update={"vehicle_code_digits": 5})  # every hypothesis example has fleets of its own
DAYS = ("20261124101500", "20261125083000")


_fleets = itertools.count(1)


def add_fleet(sessions) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Three drivers on three vehicles (the second with a substitute on it), and their codes: a
    new fleet each time, in a database of the test's own."""
    drivers = []
    tag = next(_fleets)
    with sessions.begin() as session:
        for number in range(3):
            vehicle, code = f"{3 * tag + number:05d}", f"D{900000 + 3 * tag + number}"
            fleet.add_vehicle(session, vehicle)
            fleet.add_driver(session, code=code, name=code, msisdn=f"2547000000{number}")
            fleet.assign(session, driver_code=code, vehicle_code=vehicle, substitute=number == 1)
            drivers.append({"vehicle": vehicle, "code": code})
    return drivers


def store(sessions, bodies: list[object], *, kind: str = "c2b_confirmation") -> list[int]:  # type: ignore[no-untyped-def]
    """Inbox rows as the ingest keeps them; each its own external id."""
    with sessions.begin() as session:
        rows = [Inbox(kind=kind, external_id=f"x-{next_receipt('E')}", body=json.dumps(body)) for body in bodies]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def books_of(sessions, codes: list[str]) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """What a driver's money came to: balances, payouts (one after each share, as for one row), days, notices."""
    found = []
    with sessions() as session:
        for code in codes:
            driver = fleet.get_driver(session, code)
            balances = dict(session.execute(select(Account.kind, Account.balance_cents).where(Account.driver_id == driver.id)).all())
            derived = dict(session.execute(text(
                "SELECT a.kind, coalesce(sum(e.amount_cents), 0) FROM accounts a LEFT JOIN entries e ON e.account_id = a.id "
                "WHERE a.driver_id = :d GROUP BY a.kind"), {"d": driver.id}).all())
            assert balances == derived, f"{code}: cached balances differ from the ledger"
            payouts = [(p.cause_key[:6], p.cause_key.count("#"), p.amount_cents, p.state) for p in session.execute(
                select(Payout).where(Payout.driver_id == driver.id).order_by(Payout.id)).scalars()]
            days = sorted(session.execute(select(DriverDay.business_date, DriverDay.contributed_cents).where(
                DriverDay.driver_id == driver.id)).all())
            told = [{**n.facts, "receipt": None, "vehicle": n.facts["vehicle"] is not None} for n in session.execute(
                select(Notification).where(Notification.driver_id == driver.id, Notification.kind == "payment")
                .order_by(Notification.id)).scalars()]
            found.append({"payable": balances["payable"], "payouts": payouts, "deposit": balances["deposit"],
                          "target": balances["target"], "days": days, "told": told})
    return found


def outcomes(sessions, ids: list[int]) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        rows = {row.id: row for row in session.execute(select(Inbox).where(Inbox.id.in_(ids))).scalars()}
        return [(rows[i].status, (rows[i].reason or "").split(":")[0] or None) for i in ids]


# A payment: to which of the three drivers (by vehicle, or the driver paying the company by their
# code), or to a vehicle nobody drives; how much; which day; or a body that cannot be applied.
payment = st.one_of(
    st.tuples(st.sampled_from(["vehicle", "company"]), st.integers(0, 2), st.integers(1, 3_000), st.sampled_from(DAYS)),
    st.tuples(st.just("unknown"), st.just(0), st.integers(1, 3_000), st.sampled_from(DAYS)),
    st.tuples(st.just("bad"), st.just(0), st.just(0), st.sampled_from(DAYS)),
    # An earlier receipt again (a copy kept under another id), to a driver or to nobody, maybe
    # for another amount: a duplicate, or a conflict, in the batch or across batches.
    st.tuples(st.just("again"), st.integers(0, 29), st.integers(1, 3_000), st.sampled_from(DAYS)),
)


def body_for(kind: str, number: int, shillings: int, day: str, drivers: list[dict[str, str]], receipt: str) -> object:
    if kind == "bad":
        return {"TransID": receipt, "TransAmount": "12.5.0", "BillRefNumber": drivers[0]["vehicle"]}
    account = {"vehicle": drivers[number]["vehicle"], "company": drivers[number]["code"], "unknown": "9999999"}[kind]
    return c2b_body(receipt, f"{shillings}.00", account, at=day)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payments=st.lists(payment, min_size=1, max_size=40), cuts=st.lists(st.integers(1, 30), max_size=4))
def test_batches_keep_the_same_books_as_one_row_at_a_time(fresh_sessions, payments, cuts) -> None:  # type: ignore[no-untyped-def]
    sessions = fresh_sessions
    batched, alone = add_fleet(sessions), add_fleet(sessions)  # each example its own two fleets
    batched_ids, alone_ids, receipts = [], [], []
    for kind, number, shillings, day in payments:
        receipt = next_receipt("Q")
        if kind == "again" and receipts:
            receipt = receipts[number % len(receipts)]
            kind, number = ("unknown", 0) if shillings % 2 else ("vehicle", shillings % 3)
        elif kind == "again":
            kind, number = "vehicle", 0
        receipts.append(receipt)
        batched_ids += store(sessions, [body_for(kind, number, shillings, day, batched, "A" + receipt[1:])])
        alone_ids += store(sessions, [body_for(kind, number, shillings, day, alone, "B" + receipt[1:])])

    start = 0
    for cut in sorted({min(c, len(batched_ids)) for c in cuts} | {len(batched_ids)}):
        done = apply_callbacks(sessions, batched_ids[start:cut], WIDE)
        assert done.alone == [] and done.later == []
        start = cut
    for inbox_id in alone_ids:
        apply_callback(sessions, inbox_id, WIDE)

    assert outcomes(sessions, batched_ids) == outcomes(sessions, alone_ids)
    assert books_of(sessions, [d["code"] for d in batched]) == books_of(sessions, [d["code"] for d in alone])


def test_a_bad_row_is_set_aside_and_the_rest_of_its_batch_applied(sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code)
    good = [next_receipt("G") for _ in range(3)]
    ids = store(sessions, [c2b_body(good[0], "100.00", vehicle), {"TransID": "BAD", "TransAmount": 100.5},
                           c2b_body(good[1], "200.00", vehicle), "not an object", c2b_body(good[2], "300.00", vehicle)])
    ids += store(sessions, [{"SMSMessageData": "junk"}], kind="sms_delivery")  # another kind, applied alone: rejected too

    done = apply_callbacks(sessions, ids, CONFIG)

    assert done.alone == [] and done.later == []
    statuses = outcomes(sessions, ids)
    assert [status for status, _ in statuses] == ["processed", "rejected", "processed", "rejected", "processed", "rejected"]
    with sessions() as session:
        keys = set(session.execute(select(Posting.idempotency_key).where(Posting.inbox_id.in_(ids))).scalars())
        reasons = dict(session.execute(select(Inbox.id, Inbox.reason).where(Inbox.id.in_(ids))).all())
    assert keys == {f"c2b:{receipt}" for receipt in good}
    assert reasons[ids[1]] and reasons[ids[3]], "a rejected row keeps its reason"


def test_a_row_the_batch_cannot_take_fails_alone(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    """A driver whose accounts are gone (a damaged database): the batch is rolled back, its rows
    are applied one at a time, and only that driver's row is handed to a message of its own. (A
    database of its own: that row stays ``received``, and no other test's sweep may take it.)"""
    sessions = fresh_sessions
    codes = [next_driver_code() for _ in range(2)]
    with sessions.begin() as session:
        vehicles = [add_driver_with_vehicle(session, driver_code=code) for code in codes]
        broken = fleet.get_driver(session, codes[1]).id
        session.execute(text("DELETE FROM accounts WHERE driver_id = :d"), {"d": broken})
    receipts = [next_receipt("F") for _ in range(3)]
    ids = store(sessions, [c2b_body(receipts[0], "100.00", vehicles[0]), c2b_body(receipts[1], "100.00", vehicles[1]),
                           c2b_body(receipts[2], "50.00", vehicles[0])])

    done = apply_callbacks(sessions, ids, CONFIG)

    assert done.alone == [ids[1]]
    assert [status for status, _ in outcomes(sessions, ids)] == ["processed", "received", "processed"]


def test_duplicates_inside_and_across_batches_are_applied_once(sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code)
    receipts = [next_receipt("U") for _ in range(40)]
    # Each receipt stored twice (two rows, as a copy recovered under another id would be).
    ids = store(sessions, [c2b_body(r, "10.00", vehicle) for r in receipts])
    copies = store(sessions, [c2b_body(r, "10.00", vehicle) for r in receipts])

    # The same rows listed twice in one message, and four workers taking overlapping batches at once.
    first = apply_callbacks(sessions, ids[:5] + ids[:5] + copies[:5], CONFIG)
    assert first.alone == []
    batches = [ids + copies, copies[::-1] + ids, ids[10:30] + copies[20:], copies[5:] + ids[5:]]
    errors: list[BaseException] = []

    def run(batch: list[int]) -> None:
        try:
            assert apply_callbacks(sessions, batch, CONFIG).alone == []
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    apply_callbacks(sessions, ids + copies, CONFIG)  # a redelivery after all that: nothing left to do

    with sessions() as session:
        driver = fleet.get_driver(session, code)
        posted = session.execute(select(func.count()).select_from(Posting).where(
            Posting.driver_id == driver.id, Posting.idempotency_key.like("c2b:%"))).scalar_one()
        contributed = session.execute(select(DriverDay.contributed_cents).where(
            DriverDay.driver_id == driver.id, DriverDay.business_date == date(2026, 11, 24))).scalar_one()
        target = session.execute(select(Account.balance_cents).where(
            Account.driver_id == driver.id, Account.kind == "target")).scalar_one()
        told = session.execute(select(func.count()).select_from(Notification).where(
            Notification.driver_id == driver.id, Notification.kind == "payment")).scalar_one()
    assert posted == told == 40
    assert contributed == target == 40 * 500  # half of each KES 10 fare, towards the day's target
    statuses = outcomes(sessions, ids + copies)
    assert {status for status, _ in statuses} == {"processed"}
    assert sum(1 for _, reason in statuses if reason == "duplicate") == 40


def test_a_receipt_posted_unmatched_with_another_body_is_rejected_as_a_conflict(sessions) -> None:  # type: ignore[no-untyped-def]
    """As ``db.ledger.post`` finds it for one row: the same key with another body is kept for review."""
    receipt = next_receipt("K")
    first = store(sessions, [c2b_body(receipt, "100.00", "999999")])
    second = store(sessions, [c2b_body(receipt, "900.00", "999999")])  # the same receipt, another amount
    apply_callbacks(sessions, first, CONFIG)
    apply_callbacks(sessions, second, CONFIG)
    assert outcomes(sessions, first + second) == [("unmatched", None), ("rejected", "conflict")]
    # And both in one batch, as one row at a time would find them.
    receipt = next_receipt("K")
    both = store(sessions, [c2b_body(receipt, "100.00", "999999"), c2b_body(receipt, "900.00", "999999"),
                            c2b_body(receipt, "100.00", "999999")])
    apply_callbacks(sessions, both, CONFIG)
    assert outcomes(sessions, both) == [("unmatched", None), ("rejected", "conflict"), ("processed", "duplicate")]
