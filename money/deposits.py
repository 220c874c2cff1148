"""A driver's security deposit, moved by hand: every movement through the ledger, named by the
person who made it (``operator_actions``), and every shilling paid out approved by another.

- ``top_up``: from what the driver is owed (``payable → deposit``), with their consent: their share
  kept back instead of paid out. (Deposits paid by M-Pesa arrive by themselves: a payment to the
  driver's own code beyond today's target, docs/rules.md.)
- ``refund``: ``deposit → payable``, then payouts of it (split at the B2C maximum) that wait for a
  second person's approval (``money.payouts.approve`` refuses the one who asked). What the driver
  owes (``payable`` below zero: paid more than owed) is repaid from it first (``refund_payable``);
- ``withdraw_payout``: a payout held for approval and never sent is not paid after all; a refund's
  money goes back into the deposit.
Amounts are whole shillings (B2C pays nothing else); the deposit never goes below zero.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import structlog
from sqlalchemy.orm import Session

from db import fleet, ledger
from db.audit import record_action
from fleetpay import rules
from fleetpay.settings import Settings
from db.models import Payout
from money.payouts import REFUND_CAUSES, create_payout, withdraw

log = structlog.get_logger("fleetpay.deposits")


class DepositRefused(ValueError):
    """A deposit movement the books do not allow; the message says why."""


def _whole_shillings(amount_cents: int) -> None:
    if amount_cents <= 0 or amount_cents % 100:
        raise DepositRefused("the amount is a positive number of whole shillings")


def top_up(
    session: Session, driver_code: str, amount_cents: int, *, operator: str, reason: str, business_date: date
) -> dict[str, Any]:
    """Move ``amount_cents`` of what the driver is owed into their deposit."""
    _whole_shillings(amount_cents)
    driver = fleet.lock_driver(session, fleet.get_driver(session, driver_code).id)
    accounts = ledger.driver_accounts(session, driver.id)
    owed_cents = ledger.balance_cents(session, accounts.payable)
    if owed_cents < amount_cents:
        raise DepositRefused(f"driver {driver.code} is owed {owed_cents} cents, less than {amount_cents}: "
                             "a top-up is kept back from money owed to them")
    action_id = record_action(session, action="deposit_topup", subject=driver.code, operator=operator, reason=reason,
                              detail={"amount_cents": amount_cents})
    ledger.post(session, key=f"deposit-topup:{action_id}", kind="deposit_topup", business_date=business_date,
                driver_id=driver.id, memo={"operator": operator, "reason": reason},
                legs=[(accounts.payable, -amount_cents), (accounts.deposit, amount_cents)])
    log.warning("deposit_topped_up", driver=driver.code, amount_cents=amount_cents, operator=operator)
    return {"driver": driver.code, "amount_cents": amount_cents,
            "deposit_cents": ledger.balance_cents(session, accounts.deposit)}


def refund(
    session: Session, driver_code: str, amount_cents: int | None, settings: Settings, *, operator: str, reason: str,
    business_date: date,
) -> dict[str, Any]:
    """Pay back ``amount_cents`` of the deposit (None: all of it in whole shillings) as payouts
    that wait for another person's approval."""
    driver = fleet.lock_driver(session, fleet.get_driver(session, driver_code).id)
    accounts = ledger.driver_accounts(session, driver.id)
    held_cents = ledger.balance_cents(session, accounts.deposit)
    if amount_cents is None:
        amount_cents = rules.payout_amount_cents(held_cents, minimum_cents=settings.b2c_minimum_cents)
        if amount_cents == 0:
            raise DepositRefused(f"driver {driver.code}'s deposit is {held_cents} cents: nothing B2C can pay")
    _whole_shillings(amount_cents)
    if amount_cents > held_cents:
        raise DepositRefused(f"driver {driver.code}'s deposit is {held_cents} cents, less than {amount_cents}")
    if amount_cents < settings.b2c_minimum_cents:
        raise DepositRefused(f"B2C pays at least {settings.b2c_minimum_cents} cents")
    action_id = record_action(session, action="deposit_refund", subject=driver.code, operator=operator, reason=reason,
                              detail={"amount_cents": amount_cents})
    key = f"deposit-refund:{action_id}"
    ledger.post(session, key=key, kind="deposit_refund", business_date=business_date, driver_id=driver.id,
                memo={"operator": operator, "reason": reason},
                legs=[(accounts.deposit, -amount_cents), (accounts.payable, amount_cents)])
    to_pay_cents = refund_payable(amount_cents, ledger.balance_cents(session, accounts.payable),
                                  minimum_cents=settings.b2c_minimum_cents)
    parts = rules.payout_parts_cents(to_pay_cents, maximum_cents=settings.b2c_maximum_cents,
                                     minimum_cents=settings.b2c_minimum_cents) if to_pay_cents else []
    payouts = [
        create_payout(session, driver=driver, amount_cents=part_cents, business_date=business_date,
                      cause_key=key if number == 1 else f"{key}#{number}", requires_approval=True, requested_by=operator)
        for number, part_cents in enumerate(parts, start=1)
    ]
    log.warning("deposit_refund_asked", driver=driver.code, amount_cents=amount_cents, operator=operator,
                payout_ids=[p.id for p in payouts], kept_for_debt_cents=amount_cents - to_pay_cents)
    return {"driver": driver.code, "amount_cents": amount_cents, "payouts": [p.id for p in payouts],
            "kept_for_debt_cents": amount_cents - to_pay_cents,
            "deposit_cents": ledger.balance_cents(session, accounts.deposit), "waiting_for_approval": bool(payouts)}


def refund_payable(refund_cents: int, payable_after_cents: int, *, minimum_cents: int) -> int:
    """What of a deposit refund may be paid out once it is in ``payable``: all of it, less what the
    driver owed (``payable`` was below zero), in whole shillings, or nothing below the minimum."""
    return rules.payout_amount_cents(max(0, min(refund_cents, payable_after_cents)), minimum_cents=minimum_cents)


def withdraw_payout(session: Session, payout_id: int, *, operator: str, reason: str, business_date: date) -> Payout:
    """Withdraw a payout held for approval and never sent (``money.payouts.withdraw``: its money
    payable again); a deposit refund's money goes back into the deposit."""
    payout = withdraw(session, payout_id, operator=operator, reason=reason)
    record_action(session, action="payout_withdrawn", subject=f"payout:{payout_id}", operator=operator, reason=reason,
                  detail={"amount_cents": payout.amount_cents, "cause": payout.cause_key})
    if payout.cause_key.startswith(REFUND_CAUSES):
        accounts = ledger.driver_accounts(session, payout.driver_id)
        ledger.post(
            session, key=f"refund-withdrawn:{payout.id}", kind="deposit_refund_withdrawn",
            business_date=business_date, driver_id=payout.driver_id, payout_id=payout.id,
            memo={"operator": operator, "reason": reason},
            legs=[(accounts.payable, -payout.amount_cents), (accounts.deposit, payout.amount_cents)],
        )
    return payout
