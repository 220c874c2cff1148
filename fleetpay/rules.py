"""The money rules of docs/rules.md as pure functions: the one place that computes a split.

All amounts are integer cents. Nothing here reads settings, a clock or a database: the caller
passes the driver's numbers, read under the driver's lock in the transaction that posts the result.
Invariants are asserted where they must hold, so a broken rule fails loudly before it is posted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

SplitMode = Literal["whole_payment", "exact"]
DriverRole = Literal["regular", "substitute"]

_CENTS_PER_SHILLING = 100


@dataclass(frozen=True)
class FareSplit:
    """A fare divided between the driver (paid out) and the company (counts towards the target)."""

    driver_share_cents: int
    contribution_cents: int


def split_fare(
    amount_cents: int,
    *,
    role: DriverRole,
    fare_percent: int,
    target_cents: int,
    contributed_cents: int,
    target_sharing: bool,
    split_mode: SplitMode,
) -> FareSplit:
    """Split a customer's fare paid to a vehicle code (docs/rules.md "Fare split").

    ``contributed_cents`` is today's contribution *before* this fare. Substitutes always get the
    percentage split. In ``exact`` mode the company keeps at most what is left to the target; the
    driver's share is then rounded down to whole shillings, so the company may keep up to 99 cents
    more than what was left (never more when fare and what is left are whole shillings).
    """
    _require(amount_cents > 0, "amount_cents must be positive")
    _require(1 <= fare_percent <= 100, "fare_percent must be within 1..100")
    _require(target_cents >= 0 and contributed_cents >= 0, "target and contribution must be >= 0")
    _require(role in get_args(DriverRole), f"unknown role {role!r}")
    _require(split_mode in get_args(SplitMode), f"unknown split_mode {split_mode!r}")

    percent_share_cents = amount_cents * fare_percent // 100
    left_cents = target_cents - contributed_cents
    if role == "substitute":
        share_cents = percent_share_cents
    elif left_cents <= 0:
        share_cents = amount_cents if target_sharing else percent_share_cents
    elif split_mode == "exact":
        share_cents = amount_cents - min(amount_cents - percent_share_cents, left_cents)
    else:
        share_cents = percent_share_cents

    driver_share_cents = _whole_shillings(share_cents)
    split = FareSplit(driver_share_cents, amount_cents - driver_share_cents)
    assert split.driver_share_cents + split.contribution_cents == amount_cents
    assert split.driver_share_cents >= 0 and split.contribution_cents >= 0
    assert split.driver_share_cents % _CENTS_PER_SHILLING == 0
    return split


@dataclass(frozen=True)
class DriverPaymentSplit:
    """A driver's own payment to the company: first the target, then the security deposit."""

    target_cents: int
    deposit_cents: int


def split_driver_payment(
    amount_cents: int, *, target_cents: int, contributed_cents: int
) -> DriverPaymentSplit:
    """Split a payment to a driver ID (docs/rules.md "Driver pays the company"); it makes no payout."""
    _require(amount_cents > 0, "amount_cents must be positive")
    _require(target_cents >= 0 and contributed_cents >= 0, "target and contribution must be >= 0")
    left_cents = max(0, target_cents - contributed_cents)
    towards_target_cents = min(left_cents, amount_cents)
    split = DriverPaymentSplit(towards_target_cents, amount_cents - towards_target_cents)
    assert split.target_cents + split.deposit_cents == amount_cents
    assert split.target_cents >= 0 and split.deposit_cents >= 0
    return split


def payout_amount_cents(payable_cents: int, *, minimum_cents: int = 1000) -> int:
    """What to pay out of ``payable_cents`` now: whole shillings, or 0 below the B2C minimum.

    B2C pays whole shillings only and refuses less than KES 10; the remainder stays payable and
    goes out with a later payout.
    """
    _require(payable_cents >= 0, "payable_cents must be >= 0")
    _require(minimum_cents > 0, "minimum_cents must be positive")
    payout_cents = _whole_shillings(payable_cents)
    return payout_cents if payout_cents >= minimum_cents else 0


def payout_parts_cents(amount_cents: int, *, maximum_cents: int, minimum_cents: int = 1000) -> list[int]:
    """``amount_cents`` (whole shillings, at least the minimum) as B2C payments of at most
    ``maximum_cents`` each and at least ``minimum_cents`` each: full ones first, and a last one
    topped up from the one before when it would fall below the minimum."""
    _require(amount_cents >= minimum_cents and amount_cents % _CENTS_PER_SHILLING == 0,
             "amount_cents must be whole shillings, at least the minimum")
    _require(maximum_cents >= 2 * minimum_cents and maximum_cents % _CENTS_PER_SHILLING == 0,
             "maximum_cents must be whole shillings, at least twice the minimum")
    full, rest = divmod(amount_cents, maximum_cents)
    parts = [maximum_cents] * full + ([rest] if rest else [])
    if parts[-1] < minimum_cents:  # only possible with two or more parts
        parts[-2] -= minimum_cents - parts[-1]
        parts[-1] = minimum_cents
    assert sum(parts) == amount_cents
    assert all(minimum_cents <= part <= maximum_cents and part % _CENTS_PER_SHILLING == 0 for part in parts)
    return parts


@dataclass(frozen=True)
class DayClose:
    """The outcome of one driver's daily close, to be posted once per business day."""

    met: bool
    shortfall_cents: int
    next_target_cents: int
    consecutive_misses: int
    flag_termination: bool


def close_day(
    *,
    target_cents: int,
    contributed_cents: int,
    base_target_cents: int,
    consecutive_misses: int,
    termination_misses: int,
    role_paused: bool = False,
) -> DayClose:
    """Close a driver's business day (docs/rules.md "Business day and the daily close").

    ``target_cents`` is today's target, which already holds yesterday's carry; tomorrow's is the
    base plus today's shortfall. Adding the shortfall to today's target instead would count old
    debt twice (the older system's bug).

    A paused driver (no vehicle; substitutes too: no rollover, no misses, no bonus) gets a neutral
    close: ``met`` is False so that no bonus is created, but nothing is missed either: no
    shortfall, misses unchanged, no flag, and tomorrow's target is the plain base.
    """
    _require(min(target_cents, contributed_cents, base_target_cents) >= 0, "cents must be >= 0")
    _require(consecutive_misses >= 0, "consecutive_misses must be >= 0")
    _require(termination_misses >= 1, "termination_misses must be >= 1")
    if role_paused:
        return DayClose(False, 0, base_target_cents, consecutive_misses, False)

    shortfall_cents = max(0, target_cents - contributed_cents)
    met = shortfall_cents == 0
    misses = 0 if met else consecutive_misses + 1
    return DayClose(
        met=met,
        shortfall_cents=shortfall_cents,
        next_target_cents=base_target_cents + shortfall_cents,
        consecutive_misses=misses,
        flag_termination=misses >= termination_misses,
    )


def _whole_shillings(cents: int) -> int:
    return cents // _CENTS_PER_SHILLING * _CENTS_PER_SHILLING


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
