"""The set-based statements of a batch of payments (``money.payment_batch`` decides what they write).

Each is one statement for the whole batch, whatever its size: the rows travel as arrays and
PostgreSQL expands them with ``unnest``, so the statement is compiled once and a batch costs a
few round trips, not a dozen per payment. The same rules hold as for one payment (``db.ledger``,
``db.fleet``): drivers are locked in id order, postings are unique by their key, entries move the
driver accounts' cached balances through the ledger's trigger, in account-id order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.fleet import Payee


class WaitingRow(NamedTuple):
    id: int
    kind: str
    body: str


class DriverRow(NamedTuple):
    """What a payment's decision reads of a driver (the fields ``db.fleet.driver_terms`` reads)."""

    id: int
    code: str
    msisdn: str
    daily_target_cents: int | None
    fare_percent: int | None
    target_sharing: bool | None
    instant_payouts: bool | None
    consecutive_misses: int
    rollover_cents: int


class DayRow(NamedTuple):
    target_cents: int
    contributed_cents: int
    open: bool


# SKIP LOCKED: a row another worker holds is being applied by it (a duplicate message, a sweep's
# copy); if that worker rolls back, its own message is retried.
_TAKE_WAITING = text(
    "SELECT id, kind, body FROM inbox WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'received' "
    "ORDER BY id FOR UPDATE SKIP LOCKED"
)
_VEHICLE_DRIVERS = text(
    "SELECT code, regular_driver_id, substitute_driver_id FROM vehicles WHERE code = ANY(CAST(:codes AS text[]))"
)
# A driver with no vehicle is paused: their money is unmatched (as ``db.fleet.payee_for_driver_code``).
_DRIVERS_WITH_VEHICLE = text(
    "SELECT d.code, d.id FROM drivers d WHERE d.code = ANY(CAST(:codes AS text[])) AND EXISTS "
    "(SELECT 1 FROM vehicles v WHERE v.regular_driver_id = d.id OR v.substitute_driver_id = d.id)"
)
# FOR NO KEY UPDATE, in id order: see ``db.fleet._LOCK_DRIVER``; one order for every batch, so
# two batches sharing drivers wait for each other and never deadlock.
_LOCK_DRIVERS = text(
    "SELECT id, code, msisdn, daily_target_cents, fare_percent, target_sharing, instant_payouts, consecutive_misses, "
    "rollover_cents FROM drivers WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR NO KEY UPDATE"
)
_EXISTING_KEYS = text(
    "SELECT idempotency_key, body_sha256 FROM postings WHERE idempotency_key = ANY(CAST(:keys AS text[]))"
)
_NEW_DAYS = text(
    "INSERT INTO driver_days (driver_id, business_date, target_cents, carried_cents, misses_carried) "
    "SELECT * FROM unnest(CAST(:driver_ids AS bigint[]), CAST(:dates AS date[]), CAST(:targets AS bigint[]), "
    "CAST(:carried AS bigint[]), CAST(:misses AS integer[])) ON CONFLICT DO NOTHING"
)
_DAYS = text(
    "SELECT d.driver_id, d.business_date, d.target_cents, d.contributed_cents, d.closed_at IS NULL "
    "FROM driver_days d JOIN unnest(CAST(:driver_ids AS bigint[]), CAST(:dates AS date[])) AS k(driver_id, business_date) "
    "ON d.driver_id = k.driver_id AND d.business_date = k.business_date"
)
_ACCOUNTS = text("SELECT driver_id, kind, id FROM accounts WHERE driver_id = ANY(CAST(:ids AS bigint[]))")
_INSERT_POSTINGS = text(
    "INSERT INTO postings (idempotency_key, kind, body_sha256, business_date, driver_id, inbox_id, payout_id) "
    "SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:digests AS text[]), "
    "CAST(:dates AS date[]), CAST(:driver_ids AS bigint[]), CAST(:inbox_ids AS bigint[]), CAST(:payout_ids AS bigint[])) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, id"
)
_BALANCES = text("SELECT id, balance_cents FROM accounts WHERE id = ANY(CAST(:ids AS bigint[]))")
# The columns ``money.payouts.create_payout`` sets; the rest are the table's defaults (``pending``).
_INSERT_PAYOUTS = text(
    "INSERT INTO payouts (originator_conversation_id, cause_key, driver_id, msisdn, amount_cents) "
    "SELECT * FROM unnest(CAST(:ocids AS text[]), CAST(:cause_keys AS text[]), CAST(:driver_ids AS bigint[]), "
    "CAST(:msisdns AS text[]), CAST(:amounts AS bigint[])) RETURNING cause_key, id"
)
_INSERT_ENTRIES = text(
    "INSERT INTO entries (posting_id, account_id, amount_cents) "
    "SELECT * FROM unnest(CAST(:posting_ids AS bigint[]), CAST(:account_ids AS bigint[]), CAST(:amounts AS bigint[]))"
)
_ADD_CONTRIBUTIONS = text(
    "UPDATE driver_days d SET contributed_cents = d.contributed_cents + u.amount "
    "FROM unnest(CAST(:driver_ids AS bigint[]), CAST(:dates AS date[]), CAST(:amounts AS bigint[])) "
    "AS u(driver_id, business_date, amount) WHERE d.driver_id = u.driver_id AND d.business_date = u.business_date"
)
_FINISH = text(
    "UPDATE inbox SET status = u.status, reason = u.reason, processed_at = now(), attempts = inbox.attempts + 1 "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:reasons AS text[])) AS u(id, status, reason) "
    "WHERE inbox.id = u.id"
)
_ADD_NOTICES = text(
    "INSERT INTO notifications (kind, subject, driver_id, facts, state, last_error) "
    "SELECT k, s, d, f, CASE WHEN CAST(:skipped AS text) IS NULL THEN 'pending' ELSE 'skipped' END, CAST(:skipped AS text) "
    "FROM unnest(CAST(:kinds AS text[]), CAST(:subjects AS text[]), CAST(:driver_ids AS bigint[]), "
    "CAST(:facts AS jsonb[])) AS n(k, s, d, f) ON CONFLICT (kind, subject) DO NOTHING RETURNING id"
)


def take_waiting(session: Session, inbox_ids: Sequence[int]) -> list[WaitingRow]:
    """The rows among ``inbox_ids`` still ``received`` and not held by another worker, locked, by id."""
    return [WaitingRow(*row) for row in session.execute(_TAKE_WAITING, {"ids": list(inbox_ids)})]


def payees(session: Session, *, vehicle_codes: Iterable[str], driver_codes: Iterable[str]) -> tuple[dict[str, Payee], dict[str, Payee]]:
    """Who is paid, by vehicle code and by driver code (``db.fleet.payee_for_vehicle`` and
    ``payee_for_driver_code`` for many at once); a code with no payee is absent."""
    by_vehicle: dict[str, Payee] = {}
    vehicles = sorted(set(vehicle_codes))
    if vehicles:
        for code, regular_id, substitute_id in session.execute(_VEHICLE_DRIVERS, {"codes": vehicles}):
            if substitute_id is not None:
                by_vehicle[code] = Payee(substitute_id, "substitute")
            elif regular_id is not None:
                by_vehicle[code] = Payee(regular_id, "regular")
    by_driver: dict[str, Payee] = {}
    drivers = sorted(set(driver_codes))
    if drivers:
        by_driver = {code: Payee(driver_id, "company") for code, driver_id in session.execute(
            _DRIVERS_WITH_VEHICLE, {"codes": drivers})}
    return by_vehicle, by_driver


def lock_drivers(session: Session, driver_ids: Iterable[int]) -> dict[int, DriverRow]:
    """Take these drivers' row locks, in id order, for the rest of the transaction."""
    ids = sorted(set(driver_ids))
    if not ids:
        return {}
    return {row.id: row for row in (DriverRow(*found) for found in session.execute(_LOCK_DRIVERS, {"ids": ids}))}


def existing_keys(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """The keys already posted, with their postings' body digests."""
    wanted = list(keys)
    if not wanted:
        return {}
    return dict(session.execute(_EXISTING_KEYS, {"keys": wanted}).all())


def driver_days(session: Session, new: Sequence[tuple[int, date, int, int, int]]) -> dict[tuple[int, date], DayRow]:
    """The day rows of these (driver, business date)s, created where missing with (target, carried,
    misses carried) as given: ``db.fleet.driver_day`` for many at once. Call under the drivers' locks."""
    if not new:
        return {}
    columns = list(zip(*new))
    session.execute(_NEW_DAYS, {"driver_ids": list(columns[0]), "dates": list(columns[1]), "targets": list(columns[2]),
                                "carried": list(columns[3]), "misses": list(columns[4])})
    found = session.execute(_DAYS, {"driver_ids": list(columns[0]), "dates": list(columns[1])})
    return {(driver_id, day): DayRow(target, contributed, is_open)
            for driver_id, day, target, contributed, is_open in found}


def driver_accounts(session: Session, driver_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Each driver's accounts by kind (``payable``, ``deposit``, ``target``)."""
    ids = sorted(set(driver_ids))
    accounts: dict[int, dict[str, int]] = {driver_id: {} for driver_id in ids}
    if ids:
        for driver_id, kind, account_id in session.execute(_ACCOUNTS, {"ids": ids}):
            accounts[driver_id][kind] = account_id
    return accounts


class NewPosting(NamedTuple):
    key: str
    kind: str
    body_sha256: str
    business_date: date
    driver_id: int | None
    inbox_id: int | None
    legs: tuple[tuple[int, int], ...]  # normalised (``db.ledger.normalise_legs``)
    payout_id: int | None = None


def post_all(session: Session, postings: Sequence[NewPosting]) -> dict[str, int]:
    """Write these postings and their entries; the posting id of each key written. A key already
    posted (by a transaction that committed after the caller looked) is left out, with its entries."""
    if not postings:
        return {}
    # In the order given (the receipts' order, which statements show): only copies of one receipt
    # kept under two inbox ids, in two batches at once, could meet here in opposite orders, and a
    # deadlock between them rolls one back to be retried.
    columns = list(zip(*postings))
    ids = dict(session.execute(_INSERT_POSTINGS, {
        "keys": list(columns[0]), "kinds": list(columns[1]), "digests": list(columns[2]), "dates": list(columns[3]),
        "driver_ids": list(columns[4]), "inbox_ids": list(columns[5]), "payout_ids": list(columns[7])}).all())
    entries = sorted((account_id, ids[posting.key], cents)
                     for posting in postings if posting.key in ids for account_id, cents in posting.legs)
    if entries:
        account_ids, posting_ids, amounts = (list(column) for column in zip(*entries))
        session.execute(_INSERT_ENTRIES, {"posting_ids": posting_ids, "account_ids": account_ids, "amounts": amounts})
    return ids


def balances(session: Session, account_ids: Iterable[int]) -> dict[int, int]:
    """The cached balances of these driver accounts (read under their drivers' locks to rely on them)."""
    ids = sorted(set(account_ids))
    return dict(session.execute(_BALANCES, {"ids": ids}).all()) if ids else {}


class NewPayout(NamedTuple):
    originator_conversation_id: str
    cause_key: str
    driver_id: int
    msisdn: str
    amount_cents: int


def add_payouts(session: Session, payouts: Sequence[NewPayout]) -> dict[str, int]:
    """Write these ``pending`` payouts; the id of each by its cause key."""
    if not payouts:
        return {}
    columns = [list(column) for column in zip(*payouts)]
    return dict(session.execute(_INSERT_PAYOUTS, {"ocids": columns[0], "cause_keys": columns[1], "driver_ids": columns[2],
                                                  "msisdns": columns[3], "amounts": columns[4]}).all())


def add_contributions(session: Session, amounts: dict[tuple[int, date], int]) -> None:
    """Add to the days' contributions (``db.fleet.add_contribution`` for many at once)."""
    moved = sorted((key, cents) for key, cents in amounts.items() if cents)
    if moved:
        session.execute(_ADD_CONTRIBUTIONS, {"driver_ids": [driver_id for (driver_id, _), _ in moved],
                                             "dates": [day for (_, day), _ in moved],
                                             "amounts": [cents for _, cents in moved]})


def finish(session: Session, outcomes: Sequence[tuple[int, str, str | None]]) -> None:
    """Mark each row (id, status, reason) with its outcome (``db.inbox.finish`` for many at once)."""
    if outcomes:
        ids, statuses, reasons = (list(column) for column in zip(*outcomes))
        session.execute(_FINISH, {"ids": ids, "statuses": statuses, "reasons": reasons})


def add_notices(session: Session, notices: Sequence[tuple[str, str, int, dict[str, Any]]], *,
                skipped: str | None = None) -> list[int]:
    """Write these (kind, subject, driver id, facts) notices, due now (or ``skipped`` already, with
    that reason), each once per event (``db.notifications.add`` for many at once); the ids of
    those new."""
    if not notices:
        return []
    kinds, subjects, driver_ids, facts = (list(column) for column in zip(*notices))  # ids in the payments' order
    return list(session.execute(_ADD_NOTICES, {"kinds": kinds, "subjects": subjects, "driver_ids": driver_ids,
                                               "facts": [json.dumps(f) for f in facts], "skipped": skipped}).scalars())
