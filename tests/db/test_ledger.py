"""The ledger's guarantees, proven against a real PostgreSQL: the database refuses what must
never happen, and concurrent duplicate postings change balances once."""

from __future__ import annotations

import random
import threading
from datetime import date

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from db import fleet, ledger
from db.migrate import downgrade, upgrade
from db.models import Account, Entry, Posting
from fleetpay.settings import sqlalchemy_url
from tests.support import next_driver_code

TODAY = date(2026, 11, 24)


@pytest.fixture
def driver_id(sessions):  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        return fleet.add_driver(session, code=next_driver_code(), name="Test", msisdn="254700000001").id


def _post_fare(session, driver_id: int, key: str, amount_cents: int):  # type: ignore[no-untyped-def]
    system = ledger.system_accounts(session)
    mine = ledger.driver_accounts(session, driver_id)
    return ledger.post(
        session,
        key=key,
        kind="fare",
        business_date=TODAY,
        driver_id=driver_id,
        legs=[(system.mpesa, -amount_cents), (mine.payable, amount_cents)],
    )


def test_same_key_same_body_is_a_no_op(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        first = _post_fare(session, driver_id, f"test:{driver_id}:a", 20_000)
    with sessions.begin() as session:
        again = _post_fare(session, driver_id, f"test:{driver_id}:a", 20_000)
        payable = ledger.driver_accounts(session, driver_id).payable
        assert ledger.balance_cents(session, payable) == 20_000
    assert first.created and not again.created
    assert again.posting_id == first.posting_id


def test_same_key_different_body_is_a_conflict(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        _post_fare(session, driver_id, f"test:{driver_id}:b", 20_000)
    with pytest.raises(ledger.PostingConflict), sessions.begin() as session:
        _post_fare(session, driver_id, f"test:{driver_id}:b", 30_000)


def test_unbalanced_legs_are_refused_before_the_database(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AssertionError), sessions.begin() as session:
        mine = ledger.driver_accounts(session, driver_id)
        ledger.post(session, key="x", kind="fare", business_date=TODAY, legs=[(mine.payable, 5)])


def test_database_refuses_an_unbalanced_posting(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError, match="does not balance"), sessions.begin() as session:
        mine = ledger.driver_accounts(session, driver_id)
        posting_id = session.execute(
            text(
                "INSERT INTO postings (idempotency_key, kind, body_sha256, business_date)"
                " VALUES (:k, 'raw', '', :d) RETURNING id"
            ),
            {"k": f"raw:{driver_id}", "d": TODAY},
        ).scalar_one()
        session.execute(
            text("INSERT INTO entries (posting_id, account_id, amount_cents) VALUES (:p, :a, 100)"),
            {"p": posting_id, "a": mine.payable},
        )


def test_database_refuses_a_posting_without_entries(sessions) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError, match="0 entries"), sessions.begin() as session:
        session.execute(
            text(
                "INSERT INTO postings (idempotency_key, kind, body_sha256, business_date)"
                " VALUES ('raw:empty', 'raw', '', :d)"
            ),
            {"d": TODAY},
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET amount_cents = amount_cents + 1 WHERE posting_id = :p",
        "DELETE FROM entries WHERE posting_id = :p",
        "UPDATE postings SET kind = 'other' WHERE id = :p",
        "DELETE FROM postings WHERE id = :p",
        "TRUNCATE entries CASCADE",
    ],
)
def test_database_refuses_changing_the_ledger(sessions, driver_id, statement) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        posting_id = _post_fare(session, driver_id, f"test:{driver_id}:c", 1_000).posting_id
    with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as session:
        session.execute(text(statement), {"p": posting_id})


def test_database_refuses_a_negative_deposit(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError, match="deposit_not_negative"), sessions.begin() as session:
        mine = ledger.driver_accounts(session, driver_id)
        ledger.post(
            session,
            key=f"test:{driver_id}:deposit",
            kind="deduction",
            business_date=TODAY,
            legs=[(mine.deposit, -100), (ledger.system_accounts(session).revenue, 100)],
        )


def test_concurrent_duplicate_postings_to_one_driver_apply_once(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    """16 threads × 200 payments to one driver; 30 % of the keys are posted by two threads at once."""
    threads_n, per_thread = 16, 200
    rng = random.Random(7)
    payments = [(f"conc:{driver_id}:{i}", rng.randint(1, 5_000) * 100) for i in range(2_500)]
    plans: list[list[tuple[str, int]]] = [[] for _ in range(threads_n)]
    slot = 0
    for key, amount in payments:
        copies = 2 if rng.random() < 0.3 else 1
        for _ in range(copies):
            plans[slot % threads_n].append((key, amount))
            slot += 1
    for plan in plans:
        del plan[per_thread:]
    posted = {key: amount for plan in plans for key, amount in plan}
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def run(plan: list[tuple[str, int]]) -> None:
        barrier.wait()
        try:
            for key, amount in plan:
                with sessions.begin() as session:
                    fleet.lock_driver(session, driver_id)
                    _post_fare(session, driver_id, key, amount)
        except BaseException as error:  # noqa: BLE001 — surfaced below
            errors.append(error)

    workers = [threading.Thread(target=run, args=(plan,)) for plan in plans]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors
    assert not any(worker.is_alive() for worker in workers)

    with sessions.begin() as session:
        payable = ledger.driver_accounts(session, driver_id).payable
        cached = ledger.balance_cents(session, payable)
        summed = session.execute(
            select(func.sum(Entry.amount_cents)).where(Entry.account_id == payable)
        ).scalar_one()
        postings = session.execute(
            select(func.count()).where(Posting.idempotency_key.like(f"conc:{driver_id}:%"))
        ).scalar_one()
    assert cached == summed == sum(posted.values())
    assert postings == len(posted)


def test_concurrent_duplicates_without_the_driver_lock_still_apply_once(sessions, driver_id) -> None:  # type: ignore[no-untyped-def]
    """The unique key alone (no driver lock) makes 8 simultaneous copies post once."""
    barrier = threading.Barrier(8)
    results = []

    def run() -> None:
        barrier.wait()
        with sessions.begin() as session:
            results.append(_post_fare(session, driver_id, f"race:{driver_id}", 7_700).created)

    workers = [threading.Thread(target=run) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert results.count(True) == 1 and len(results) == 8
    with sessions.begin() as session:
        payable = ledger.driver_accounts(session, driver_id).payable
        assert ledger.balance_cents(session, payable) == 7_700


def test_migrations_upgrade_downgrade_upgrade(servers) -> None:  # type: ignore[no-untyped-def]
    name = f"{servers.database_name}_mig"
    admin = create_engine(sqlalchemy_url(servers.admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = servers.database_url.rsplit("/", 1)[0] + "/" + name
    if "?" in servers.database_url:  # socket URLs carry the host as a query parameter
        url += "?" + servers.database_url.split("?", 1)[1]
    try:
        upgrade(url)
        upgrade(url)  # safe to re-run
        downgrade(url)
        engine = create_engine(sqlalchemy_url(url))
        with engine.connect() as connection:
            tables = connection.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
            ).scalar_one()
        engine.dispose()
        assert tables == 0
        upgrade(url)
        engine = create_engine(sqlalchemy_url(url))
        with engine.connect() as connection:
            kinds = connection.execute(select(Account.kind).order_by(Account.kind)).scalars().all()
        engine.dispose()
        assert kinds == ["mpesa", "payouts_in_flight", "revenue", "suspense"]
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
