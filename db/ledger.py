"""The ledger: balanced, append-only postings made idempotent by their key.

``post`` runs inside the caller's transaction, so a posting commits or rolls back with the business
change that caused it. PostgreSQL enforces what must never break (see migration 0001): entries
cannot change, a posting must balance at COMMIT, and each entry moves its driver account's cached
balance by one ``balance = balance + delta`` UPDATE. Entries are inserted in account-id order, so
concurrent postings lock cached balances in one fixed order and cannot deadlock on them.

Callers that touch a driver's accounts hold that driver's row lock (``db.fleet.lock_driver``)
first: that is what serialises decisions that read a balance (e.g. "is the target met").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Account, Entry, Posting


class PostingConflict(Exception):
    """The idempotency key exists with a different body: a bug or a forged replay, kept for review."""

    def __init__(self, key: str, existing_posting_id: int) -> None:
        super().__init__(f"posting {key!r} exists (id {existing_posting_id}) with a different body")
        self.key = key
        self.existing_posting_id = existing_posting_id


@dataclass(frozen=True)
class PostingResult:
    posting_id: int
    created: bool


def normalise_legs(legs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Merge legs per account, drop zeros, sort by account id; assert the posting balances."""
    merged: dict[int, int] = {}
    for account_id, amount_cents in legs:
        assert isinstance(amount_cents, int) and not isinstance(amount_cents, bool), amount_cents
        merged[account_id] = merged.get(account_id, 0) + amount_cents
    normalised = tuple(sorted((a, c) for a, c in merged.items() if c != 0))
    assert len(normalised) >= 2, f"a posting needs two or more non-zero legs: {normalised}"
    assert sum(c for _, c in normalised) == 0, f"posting does not balance: {normalised}"
    return normalised


def body_sha256(kind: str, business_date: date, legs: tuple[tuple[int, int], ...]) -> str:
    canonical = json.dumps([kind, business_date.isoformat(), legs], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Built once: the payment path posts on every message, and building these per call cost more CPU
# than running them (docs/benchmarks.md, "Apply").
_postings = Posting.__table__.c
_INSERT_POSTING = (
    pg_insert(Posting.__table__)
    .on_conflict_do_nothing(index_elements=[_postings.idempotency_key])
    .returning(_postings.id)
)
_POSTING_BY_KEY = select(_postings.id, _postings.body_sha256).where(_postings.idempotency_key == bindparam("key"))
_INSERT_ENTRIES = insert(Entry.__table__)


def post(
    session: Session,
    *,
    key: str,
    kind: str,
    business_date: date,
    legs: Iterable[tuple[int, int]],
    driver_id: int | None = None,
    inbox_id: int | None = None,
    payout_id: int | None = None,
    corrects_posting_id: int | None = None,
    memo: Mapping[str, Any] | None = None,
) -> PostingResult:
    """Write one posting of ``legs`` (account id, signed cents) unless ``key`` already exists.

    A second call with the same key and body changes nothing and returns the existing posting;
    with a different body it raises ``PostingConflict``.
    """
    normalised = normalise_legs(legs)
    digest = body_sha256(kind, business_date, normalised)
    posting_id = session.execute(
        _INSERT_POSTING,
        {
            "idempotency_key": key,
            "kind": kind,
            "body_sha256": digest,
            "business_date": business_date,
            "driver_id": driver_id,
            "inbox_id": inbox_id,
            "payout_id": payout_id,
            "corrects_posting_id": corrects_posting_id,
            "memo": dict(memo) if memo else None,
        },
    ).scalar_one_or_none()
    if posting_id is None:
        existing_id, existing_digest = session.execute(_POSTING_BY_KEY, {"key": key}).one()
        if existing_digest != digest:
            raise PostingConflict(key, existing_id)
        return PostingResult(existing_id, created=False)
    session.execute(
        _INSERT_ENTRIES,
        [{"posting_id": posting_id, "account_id": a, "amount_cents": c} for a, c in normalised],
    )
    return PostingResult(posting_id, created=True)


@dataclass(frozen=True)
class SystemAccounts:
    mpesa: int
    revenue: int
    suspense: int
    payouts_in_flight: int


_system_accounts: dict[str, SystemAccounts] = {}


def system_accounts(session: Session) -> SystemAccounts:
    """The fixed system accounts (created by the first migration), cached per database."""
    cache_key = str(session.get_bind().url)
    found = _system_accounts.get(cache_key)
    if found is None:
        rows = session.execute(
            select(Account.kind, Account.id).where(Account.driver_id.is_(None))
        ).all()
        found = SystemAccounts(**{kind: account_id for kind, account_id in rows})
        _system_accounts[cache_key] = found
    return found


@dataclass(frozen=True)
class DriverAccounts:
    payable: int
    deposit: int
    target: int


_DRIVER_ACCOUNTS = select(Account.__table__.c.kind, Account.__table__.c.id).where(
    Account.__table__.c.driver_id == bindparam("driver_id")
)
_driver_accounts: dict[tuple[str, int], DriverAccounts] = {}
# About 450 bytes a driver: bounded so that a worker stays small whatever the fleet (the batched
# payment path reads accounts per batch and does not use this; payouts and single rows do).
DRIVER_ACCOUNTS_CACHED_MAX = 20_000


def driver_accounts(session: Session, driver_id: int) -> DriverAccounts:
    """A driver's three accounts, cached per database: they are created with the driver
    (``db.fleet.add_driver``) and never change, and ids are never reused."""
    cache_key = (str(session.get_bind().url), driver_id)
    found = _driver_accounts.get(cache_key)
    if found is None:
        rows = session.execute(_DRIVER_ACCOUNTS, {"driver_id": driver_id}).all()
        found = DriverAccounts(**{kind: account_id for kind, account_id in rows})
        if len(_driver_accounts) >= DRIVER_ACCOUNTS_CACHED_MAX:
            _driver_accounts.clear()
        _driver_accounts[cache_key] = found
    return found


def balance_cents(session: Session, account_id: int) -> int:
    """The cached balance of a driver account (read under the driver's lock to rely on it)."""
    return session.execute(
        select(Account.balance_cents).where(Account.id == account_id)
    ).scalar_one()


def newest_entry_id(session: Session, account_id: int) -> int | None:
    """The id of the newest entry on an account, or None for an account never moved."""
    return session.execute(select(func.max(Entry.id)).where(Entry.account_id == account_id)).scalar_one()
