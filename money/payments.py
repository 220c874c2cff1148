"""Apply one incoming payment to the books, inside the caller's transaction.

Who is paid is decided by the account reference (docs/rules.md); how much each side gets is decided
by ``fleetpay.rules`` (the only module that computes a split). This module wires the two to the
database: under the driver's row lock it reads today's target and contribution, posts the split
as one balanced posting keyed by the M-Pesa receipt (``c2b:<TransID>``; an operator's assignment of
unmatched money is keyed ``assign:<TransID>``), moves the driver-day row, and reserves a payout when
enough is payable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from db import fleet, ledger
from db.fleet import Payee
from db.models import Posting
from fleetpay import rules
from fleetpay.settings import Settings
from money import notices
from money.payouts import reserve_payable
from schemas.parsing import AccountRef

log = structlog.get_logger("fleetpay.worker")


@dataclass(frozen=True)
class Applied:
    """What applying a callback did: ``status`` for the inbox row; after COMMIT, payouts to send
    and payouts to ask Transaction Status about."""

    status: str  # processed | unmatched | rejected
    reason: str | None = None
    payout_ids: tuple[int, ...] = ()
    status_checks: tuple[int, ...] = ()
    about_payout: int | None = None  # a result: the payout it was taken to be about (its evidence)
    notice_ids: tuple[int, ...] = ()  # driver notices written (money.notices), to send after COMMIT


@dataclass(frozen=True)
class Split:
    """How one payment to a driver is posted: the posting's kind, its legs (besides the source's
    debit), the contribution towards the day's target, what of it counts on the day's row (nothing
    once the day is closed: its contributions have gone to revenue), and the driver's share."""

    kind: str
    legs: tuple[tuple[int, int], ...]
    contribution_cents: int
    day_cents: int
    share_cents: int


def payment_split(
    amount_cents: int,
    *,
    role: str,
    terms: fleet.DriverTerms,
    split_mode: str,
    target_cents: int,
    contributed_cents: int,
    day_open: bool,
    accounts: ledger.DriverAccounts,
    revenue_account: int,
) -> Split:
    """Pure: the split of ``fleetpay.rules`` wired to the driver's accounts. A day already closed
    has moved its contributions to revenue: a late payment's company part goes there directly."""
    contribution_account = accounts.target if day_open else revenue_account
    if role == "company":
        paid = rules.split_driver_payment(amount_cents, target_cents=target_cents, contributed_cents=contributed_cents)
        return Split("driver_payment", ((contribution_account, paid.target_cents), (accounts.deposit, paid.deposit_cents)),
                     paid.target_cents, paid.target_cents if day_open else 0, 0)
    split = rules.split_fare(
        amount_cents, role=role, fare_percent=terms.fare_percent, target_cents=target_cents,
        contributed_cents=contributed_cents, target_sharing=terms.target_sharing, split_mode=split_mode,
    )
    return Split("fare", ((accounts.payable, split.driver_share_cents), (contribution_account, split.contribution_cents)),
                 split.contribution_cents, split.contribution_cents if day_open else 0, split.driver_share_cents)


def payment_key(receipt: str) -> str:
    return f"c2b:{receipt}"


def payee_for_ref(session: Session, ref: AccountRef) -> Payee | None:
    if ref.kind == "vehicle":
        return fleet.payee_for_vehicle(session, ref.code)
    if ref.kind == "driver":
        return fleet.payee_for_driver_code(session, ref.code)
    return None


_POSTING_EXISTS = select(Posting.__table__.c.id).where(Posting.__table__.c.idempotency_key == bindparam("key"))


def posting_exists(session: Session, key: str) -> bool:
    return session.execute(_POSTING_EXISTS, {"key": key}).first() is not None


def apply_payment(
    session: Session,
    *,
    key: str,
    amount_cents: int,
    business_date: date,
    payee: Payee | None,
    settings: Settings,
    source_account: int,
    inbox_id: int | None = None,
    memo: dict[str, str] | None = None,
    vehicle_code: str | None = None,
) -> Applied:
    """Post ``amount_cents`` from ``source_account`` (M-Pesa, or suspense when an operator assigns
    unmatched money) to ``payee`` by the fleet's rules; to suspense when there is no payee."""
    system = ledger.system_accounts(session)
    if payee is None:
        result = ledger.post(
            session,
            key=key,
            kind="unmatched",
            business_date=business_date,
            inbox_id=inbox_id,
            memo=memo,
            legs=[(source_account, -amount_cents), (system.suspense, amount_cents)],
        )
        return Applied("unmatched") if result.created else Applied("processed", f"duplicate:{key}")

    driver = fleet.lock_driver(session, payee.driver_id)
    # Checked under the driver's lock: a concurrent copy of this payment has committed or not yet
    # started, so the split below is never computed twice from two different contributions.
    if posting_exists(session, key):
        return Applied("processed", f"duplicate:{key}")

    terms = fleet.driver_terms(driver, settings)
    day = fleet.driver_day(session, driver, business_date, terms.base_target_cents)
    split = payment_split(
        amount_cents, role=payee.role, terms=terms, split_mode=settings.split_mode,
        target_cents=day.target_cents, contributed_cents=day.contributed_cents, day_open=day.closed_at is None,
        accounts=ledger.driver_accounts(session, driver.id), revenue_account=system.revenue,
    )
    result = ledger.post(
        session,
        key=key,
        kind=split.kind,
        business_date=business_date,
        driver_id=driver.id,
        inbox_id=inbox_id,
        memo=memo,
        legs=[(source_account, -amount_cents), *split.legs],
    )
    if not result.created:  # the same receipt, attributed identically by a concurrent copy
        return Applied("processed", f"duplicate:{key}")
    fleet.add_contribution(session, driver.id, business_date, split.day_cents)
    notices.payment_applied(
        session, key=key, driver_id=driver.id, amount_cents=amount_cents, vehicle_code=vehicle_code,
        contributed_cents=day.contributed_cents + split.day_cents, target_cents=day.target_cents,
        share_cents=split.share_cents,
    )
    log.info(
        "payment_applied",
        key=key,
        driver=driver.code,
        amount_cents=amount_cents,
        share_cents=split.share_cents,
        contribution_cents=split.contribution_cents,
    )
    payout_ids: tuple[int, ...] = ()
    if split.share_cents and terms.instant_payouts:
        payouts = reserve_payable(session, driver, settings, cause_key=f"share:{key}", business_date=business_date)
        payout_ids = tuple(payout.id for payout in payouts)
    return Applied("processed", payout_ids=payout_ids)

