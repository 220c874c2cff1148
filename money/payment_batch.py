"""Apply a batch of C2B confirmations in the caller's transaction, with set-based statements.

The decisions are those of one payment (``money.payments.payment_split``: the pure rules, once per
payment), made in the order the receipts were acknowledged (inbox id) within each driver, each
from the day's contribution as the earlier payments in the batch left it. Only the I/O is
batched (``db.payment_batch``): the rows are taken with their locks, payees resolved together,
the drivers locked in id order, then postings, entries, driver days, notices, payouts and the
inbox written with one statement each. A payout is reserved after each payment with a share, as
for one payment (``money.payouts.payout_plan``), from what the driver is owed at that point.

Exactly once, as for one row: a row is applied only while ``received`` under its lock; a receipt
already posted (an earlier batch, another row) is a duplicate, checked under the drivers' locks;
the same receipt twice in one batch is applied once. A body that cannot be applied is marked
``rejected`` here and never holds up the rest. Rows of other kinds are returned for the caller to
apply one at a time (``money.callbacks``). If a posting appears between the check and the insert
(a concurrent copy attributed to another driver), ``PostingRaced`` rolls the batch back to be
applied again, when the check finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import structlog
from sqlalchemy.orm import Session

from db import fleet, ledger, payment_batch
from db.fleet import Payee
from db.payment_batch import DriverRow, NewPayout, NewPosting
from fleetpay.settings import Settings
from money import notices
from money.payments import payment_key, payment_split
from money.payouts import new_originator_conversation_id, payout_plan
from schemas.callbacks import C2BPayment, InvalidCallback, parse_c2b
from schemas.json_body import decode_json
from schemas.parsing import AccountRef, business_date, classify_account_ref

log = structlog.get_logger("fleetpay.worker")

C2B = "c2b_confirmation"


class PostingRaced(Exception):
    """A receipt was posted by another transaction after this batch looked: apply it again."""


@dataclass
class BatchApplied:
    """What a batch did; ``others``: waiting rows of other kinds, for the caller to apply alone."""

    applied: int = 0
    unmatched: int = 0
    duplicates: int = 0
    rejected: int = 0
    payout_ids: list[int] = field(default_factory=list)
    notice_ids: tuple[int, ...] = ()
    others: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Payment:
    inbox_id: int
    key: str
    amount_cents: int
    business_date: date
    ref: AccountRef


def _read(row_id: int, body: str, settings: Settings) -> _Payment:
    payment: C2BPayment = parse_c2b(decode_json(body.encode()), max_amount_cents=settings.amount_max_cents)
    ref = classify_account_ref(payment.bill_ref, vehicle_code_digits=settings.vehicle_code_digits,
                               driver_code_pattern=settings.driver_code_pattern)
    return _Payment(row_id, payment_key(payment.trans_id), payment.amount_cents,
                    business_date(payment.trans_time, close_time=settings.close_time, tz=settings.timezone), ref)


def apply_c2b_batch(session: Session, inbox_ids: Sequence[int], settings: Settings) -> BatchApplied:
    done = BatchApplied()
    outcomes: list[tuple[int, str, str | None]] = []
    payments: list[_Payment] = []
    seen: set[str] = set()
    copies: list[_Payment] = []  # later rows of a receipt already in this batch
    for row in payment_batch.take_waiting(session, inbox_ids):
        if row.kind != C2B:
            done.others.append(row.id)
            continue
        try:
            payment = _read(row.id, row.body, settings)
        except InvalidCallback as bad:
            log.error("callback_rejected", inbox_id=row.id, reason=bad.reason)
            outcomes.append((row.id, "rejected", bad.reason))
            continue
        if payment.key in seen:  # the same receipt twice in this batch: the first is applied
            copies.append(payment)
            continue
        seen.add(payment.key)
        payments.append(payment)

    by_vehicle, by_driver = payment_batch.payees(
        session, vehicle_codes=[p.ref.code for p in payments + copies if p.ref.kind == "vehicle"],
        driver_codes=[p.ref.code for p in payments + copies if p.ref.kind == "driver"])
    payee_of = {p.inbox_id: _payee(p.ref, by_vehicle, by_driver) for p in payments + copies}
    # Locked before the check: a concurrent copy of a payment has committed, or not started.
    drivers = payment_batch.lock_drivers(session, [payee.driver_id for payee in payee_of.values() if payee])
    posted = payment_batch.existing_keys(session, [p.key for p in payments])
    system = ledger.system_accounts(session)
    fresh = []
    for payment in payments:
        if payment.key in posted:
            outcomes.append(_again(payment, posted[payment.key], payee_of, system))
        else:
            fresh.append(payment)

    terms = {driver.id: fleet.driver_terms(driver, settings) for driver in drivers.values()}  # type: ignore[arg-type]
    days = payment_batch.driver_days(session, sorted({
        (driver.id, p.business_date, terms[driver.id].base_target_cents + driver.rollover_cents,
         driver.rollover_cents, driver.consecutive_misses)
        for p in fresh if (driver := _driver(payee_of[p.inbox_id], drivers)) is not None}))
    accounts = payment_batch.driver_accounts(session, drivers)

    postings: list[NewPosting] = []
    day_moves: dict[tuple[int, date], int] = {}
    contributed = {key: day.contributed_cents for key, day in days.items()}
    told: list[tuple[str, int, dict[str, Any]]] = []
    # What each instantly paid driver is owed, as the batch moves it: the payout after each share is
    # decided from it exactly as ``money.payouts.reserve_payable`` decides it after one payment.
    payable = payment_batch.balances(session, [accounts[d]["payable"] for d in drivers if terms[d].instant_payouts])
    reservations: list[tuple[NewPayout, date]] = []
    for p in fresh:  # inbox id order: within a driver, the order the receipts were acknowledged
        payee = payee_of[p.inbox_id]
        if payee is None:
            postings.append(_unmatched(p, system))
            outcomes.append((p.inbox_id, "unmatched", None))
            done.unmatched += 1
            continue
        day_key = (payee.driver_id, p.business_date)
        day = days[day_key]
        split = payment_split(
            p.amount_cents, role=payee.role, terms=terms[payee.driver_id], split_mode=settings.split_mode,
            target_cents=day.target_cents, contributed_cents=contributed[day_key], day_open=day.open,
            accounts=ledger.DriverAccounts(**accounts[payee.driver_id]), revenue_account=system.revenue)
        postings.append(_posting(p, split.kind, payee.driver_id,
                                 ledger.normalise_legs([(system.mpesa, -p.amount_cents), *split.legs])))
        contributed[day_key] += split.day_cents
        day_moves[day_key] = day_moves.get(day_key, 0) + split.day_cents
        told.append((p.key, payee.driver_id, notices.payment_facts(
            key=p.key, amount_cents=p.amount_cents, vehicle_code=p.ref.code if p.ref.kind == "vehicle" else None,
            contributed_cents=contributed[day_key], target_cents=day.target_cents, share_cents=split.share_cents)))
        owed_at = accounts[payee.driver_id]["payable"]
        if owed_at in payable:
            payable[owed_at] += split.share_cents
            if split.share_cents:
                driver = drivers[payee.driver_id]
                for cause_key, part_cents in payout_plan(payable[owed_at], settings, cause_key=f"share:{p.key}"):
                    reservations.append((NewPayout(new_originator_conversation_id(), cause_key, driver.id, driver.msisdn,
                                                   part_cents), p.business_date))
                    payable[owed_at] -= part_cents
        outcomes.append((p.inbox_id, "processed", None))
        done.applied += 1

    written = payment_batch.post_all(session, postings)
    if len(written) != len(postings):
        raise PostingRaced(sorted({p.key for p in postings} - set(written))[:5])
    digests = {**posted, **{posting.key: posting.body_sha256 for posting in postings}}
    outcomes.extend(_again(copy, digests[copy.key], payee_of, system) for copy in copies)
    payment_batch.add_contributions(session, day_moves)
    notices.payments_applied(session, told, settings)
    if reservations:  # as ``money.payouts.create_payout``: each reserved from payable, in flight
        payout_ids = payment_batch.add_payouts(session, [payout for payout, _ in reservations])
        reserved = payment_batch.post_all(session, [_reserve(payout, payout_ids[payout.cause_key], day, accounts, system)
                                                    for payout, day in reservations])
        assert len(reserved) == len(reservations), "a new payout's reservation key was taken"
        done.payout_ids.extend(payout_ids[payout.cause_key] for payout, _ in reservations)
        for payout, _ in reservations:
            log.info("payout_reserved", payout_id=payout_ids[payout.cause_key], driver=drivers[payout.driver_id].code,
                     amount_cents=payout.amount_cents, cause=payout.cause_key)
    payment_batch.finish(session, outcomes)
    done.notice_ids = notices.written(session)
    done.duplicates = sum(1 for _, _, reason in outcomes if reason and reason.startswith("duplicate:"))
    done.rejected = sum(1 for _, status, _ in outcomes if status == "rejected")
    if outcomes:
        log.info("payments_applied", rows=len(outcomes), applied=done.applied, unmatched=done.unmatched,
                 duplicates=done.duplicates, rejected=done.rejected, payout_ids=done.payout_ids,
                 first_inbox_id=outcomes[0][0])
    return done


def _again(p: _Payment, digest: str, payee_of: dict[int, Payee | None], system: ledger.SystemAccounts) -> tuple[int, str, str]:
    """A receipt posted already (by an earlier batch, or an earlier row of this one): a duplicate;
    as ``db.ledger.post`` finds it for one row, unmatched money under the same key with another
    body is a conflict, kept for review."""
    if payee_of[p.inbox_id] is None and digest != _unmatched(p, system).body_sha256:
        log.error("callback_rejected", inbox_id=p.inbox_id, reason=f"conflict:{p.key}")
        return (p.inbox_id, "rejected", f"conflict:{p.key}")
    return (p.inbox_id, "processed", f"duplicate:{p.key}")


def _payee(ref: AccountRef, by_vehicle: dict[str, Payee], by_driver: dict[str, Payee]) -> Payee | None:
    if ref.kind == "vehicle":
        return by_vehicle.get(ref.code)
    if ref.kind == "driver":
        return by_driver.get(ref.code)
    return None


def _driver(payee: Payee | None, drivers: dict[int, DriverRow]) -> DriverRow | None:
    return None if payee is None else drivers[payee.driver_id]


def _reserve(payout: NewPayout, payout_id: int, day: date, accounts: dict[int, dict[str, int]],
             system: ledger.SystemAccounts) -> NewPosting:
    legs = ledger.normalise_legs([(accounts[payout.driver_id]["payable"], -payout.amount_cents),
                                  (system.payouts_in_flight, payout.amount_cents)])
    return NewPosting(f"payout:{payout_id}:reserve", "payout_reserve", ledger.body_sha256("payout_reserve", day, legs), day,
                      payout.driver_id, None, legs, payout_id)


def _unmatched(p: _Payment, system: ledger.SystemAccounts) -> NewPosting:
    """Money nobody can be paid from: to suspense, until an operator assigns it."""
    legs = ledger.normalise_legs([(system.mpesa, -p.amount_cents), (system.suspense, p.amount_cents)])
    return _posting(p, "unmatched", None, legs)


def _posting(p: _Payment, kind: str, driver_id: int | None, legs: tuple[tuple[int, int], ...]) -> NewPosting:
    return NewPosting(p.key, kind, ledger.body_sha256(kind, p.business_date, legs), p.business_date, driver_id,
                      p.inbox_id, legs)
