"""Daraja's wire formats for times, phone numbers and money, in one place.

Daraja mixes formats between APIs (``YYYYMMDDHHmmss`` in C2B, ``dd.MM.yyyy HH:mm:ss`` in B2C,
numbers in Transaction Status) and clients trip over exactly that, so each format has one
function and the payload builders never format by hand.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: M-Pesa times are Kenyan local time: EAT, UTC+3, no daylight saving.
EAT = timezone(timedelta(hours=3), "EAT")


def now_eat() -> datetime:
    """The current time in EAT, the zone every Daraja timestamp is written in."""
    return datetime.now(EAT)


def compact_time(moment: datetime) -> str:
    """``YYYYMMDDHHmmss`` in EAT, as C2B ``TransTime`` carries it."""
    return moment.astimezone(EAT).strftime("%Y%m%d%H%M%S")


def compact_time_number(moment: datetime) -> int:
    """The same digits as a JSON number, as Transaction Status and Account Balance send them."""
    return int(compact_time(moment))


def dotted_time(moment: datetime) -> str:
    """``dd.MM.yyyy HH:mm:ss`` in EAT, as B2C ``TransactionCompletedDateTime`` carries it."""
    return moment.astimezone(EAT).strftime("%d.%m.%Y %H:%M:%S")


def parse_compact_time(text: str) -> datetime:
    """Parse ``YYYYMMDDHHmmss`` as EAT; raises ValueError when malformed."""
    if len(text) != 14 or not text.isdigit():
        raise ValueError(f"not YYYYMMDDHHmmss: {text!r}")
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=EAT)


def parse_pull_date(text: str) -> datetime:
    """Pull Transactions dates: ``YYYY-MM-DD HH:MM:SS`` (also ``T``-separated, or a bare date), EAT."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=EAT)
        except ValueError:
            continue
    raise ValueError(f"not a Pull Transactions date: {text!r}")


def iso_utc(moment: datetime) -> str:
    """``2020-08-05T10:13:00Z``: the ``trxDate`` form of Pull Transactions."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_msisdn(value: str) -> bool:
    """A 12-digit Safaricom MSISDN (``2547…`` or ``2541…``) with no ``+``."""
    return len(value) == 12 and value.isdigit() and value[:4] in ("2547", "2541")


def masked_msisdn(msisdn: str) -> str:
    """C2B v2's masked number: ``2547 ***** 149``."""
    return f"{msisdn[:4]} ***** {msisdn[-3:]}"


def hashed_msisdn(msisdn: str) -> str:
    """C2B v1's number: lowercase hex SHA-256 of the 12-digit MSISDN."""
    return hashlib.sha256(msisdn.encode("ascii")).hexdigest()


def money(amount: Decimal) -> str:
    """Two-decimal string, as ``TransAmount``, ``OrgAccountBalance`` and balances are sent."""
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def money_number(amount: Decimal) -> int | float:
    """A JSON number: whole amounts as integers (``100``), others with decimals (``8959269.6``)."""
    if amount == amount.to_integral_value():
        return int(amount)
    return float(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def plain_amount(amount: Decimal) -> str:
    """Transaction Status ``Amount``: ``"100"`` for whole amounts, ``"100.50"`` otherwise."""
    if amount == amount.to_integral_value():
        return str(int(amount))
    return money(amount)


def parse_amount(value: object) -> Decimal | None:
    """A Daraja ``Amount`` (number or numeric string) as Decimal; None when not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    return amount
