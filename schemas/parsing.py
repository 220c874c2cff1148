"""Parsing of single Daraja field values: money, times, phone numbers, account references.

Daraja is loose about types (docs/daraja.md §8.4–8.5): amounts come as ``"5.00"``, ``1.00`` or ``"300"``,
times as strings or JSON numbers, phone numbers masked or hashed. Everything here is pure and
strict: a value is turned into one canonical form (integer cents, an aware EAT datetime, a 12-digit
MSISDN) or rejected with a short machine-readable reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Context, Decimal
from typing import Literal
from zoneinfo import ZoneInfo

EAT = ZoneInfo("Africa/Nairobi")

# Exponent notation ("1e3") is not accepted: no Daraja API sends it, and a plain decimal is all a
# human or Safaricom ever writes for money. A leading "-" is let through only to be told apart as
# "amount_negative". ASCII digits only (``\d`` would accept other scripts' digits).
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_CENT = Decimal("0.01")
# An explicit context, so that a caller changing the global decimal context cannot change a split.
_MONEY_CONTEXT = Context(prec=40)
_MPESA_TIME = re.compile(r"[0-9]{14}")
_B2C_TIME = re.compile(r"([0-9]{2})\.([0-9]{2})\.([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
_MSISDN = re.compile(r"(?:\+?254|0)?([17][0-9]{8})")
# The years a Daraja time may name. M-Pesa was launched in 2007; a time far outside this window is a
# forgery or a bug, and taken as it is it would post a payment on a business day that never closes
# (year 1) or never comes (year 9999). Fixed bounds, so the ingest and the worker refuse alike.
TIME_YEAR_MIN = 2000
TIME_YEAR_MAX = 2100


class InvalidField(ValueError):
    """A field value that cannot be used; ``reason`` is a short code for logs and reject rows."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_amount_cents(value: object, *, field: str = "amount", max_cents: int = 50_000_000) -> int:
    """Exact integer cents from a decimal string, an ``int`` or a ``Decimal``.

    Floats are refused ("amount_float"): a binary float has already lost the exact value, so the
    JSON must be decoded with ``parse_float=Decimal``. A value with more decimals is accepted only
    when it is a whole number of cents ("1.500" is 150 cents; "1.005" is refused).
    """
    amount = _to_decimal(value, field)
    if amount < 0:
        raise InvalidField(field, "amount_negative")
    if amount == 0:
        raise InvalidField(field, "amount_zero")
    # Compared first: quantizing a huge value such as 1E+999999 would overflow the context.
    if amount > Decimal(max_cents).scaleb(-2, context=_MONEY_CONTEXT):
        raise InvalidField(field, "amount_too_large")
    whole_cents = amount.quantize(_CENT, context=_MONEY_CONTEXT)
    if whole_cents != amount:
        raise InvalidField(field, "amount_too_many_decimals")
    return int(whole_cents.scaleb(2, context=_MONEY_CONTEXT))


def _to_decimal(value: object, field: str) -> Decimal:
    if isinstance(value, float):
        raise InvalidField(field, "amount_float")
    if isinstance(value, bool):  # bool is an int subclass; True is not one shilling
        raise InvalidField(field, "amount_not_numeric")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidField(field, "amount_not_numeric")
        return value
    if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value.strip()):
        return Decimal(value.strip())
    raise InvalidField(field, "amount_not_numeric")


def parse_mpesa_time(value: object, *, field: str = "TransTime") -> datetime:
    """``YYYYMMDDHHmmss`` (a string in C2B, a JSON number in STK) as an aware EAT datetime.

    Daraja names no time zone; every integration reads it as Kenyan local time (docs/daraja.md §2.2).
    A real date outside the years ``TIME_YEAR_MIN``…``TIME_YEAR_MAX`` is ``time_out_of_range``.
    """
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _MPESA_TIME.fullmatch(text):
        raise InvalidField(field, "time_invalid")
    # Sliced by hand: strptime would read "2024131…" as month 1, day 31 and carry on.
    parts = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    return _eat_datetime(field, *(int(p) for p in parts))


def parse_b2c_completed_time(
    value: object, *, field: str = "TransactionCompletedDateTime"
) -> datetime:
    """B2C's ``dd.MM.yyyy HH:mm:ss`` (a different format from C2B's) as an aware EAT datetime."""
    match = _B2C_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidField(field, "time_invalid")
    day, month, year, hour, minute, second = (int(g) for g in match.groups())
    return _eat_datetime(field, year, month, day, hour, minute, second)


def _eat_datetime(field: str, *parts: int) -> datetime:
    try:
        moment = datetime(*parts, tzinfo=EAT)
    except ValueError:  # 30 February, hour 25, …
        raise InvalidField(field, "time_invalid") from None
    require_sane_year(moment, field=field)
    return moment


def require_sane_year(moment: datetime, *, field: str) -> None:
    """Refuse (``time_out_of_range``) a time outside the years ``TIME_YEAR_MIN``…``TIME_YEAR_MAX``."""
    if not TIME_YEAR_MIN <= moment.year <= TIME_YEAR_MAX:
        raise InvalidField(field, "time_out_of_range")


def normalise_msisdn(value: object) -> str | None:
    """The canonical ``2547XXXXXXXX`` / ``2541XXXXXXXX`` form, or None if it is not a usable number.

    None covers masked (``2547 ***** 149``) and hashed (64 hex) C2B values: they cannot identify a
    payer (docs/daraja.md §2.5), so callers must match by account reference instead.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    match = _MSISDN.fullmatch(re.sub(r"[\s-]", "", value))
    return "254" + match.group(1) if match else None


def require_msisdn(value: object) -> str:
    """Like `normalise_msisdn`, for input that must be a phone number (an operator's command)."""
    msisdn = normalise_msisdn(value)
    if msisdn is None:
        raise InvalidField("msisdn", "msisdn_invalid")
    return msisdn


_BALANCE_ACCOUNTS_MAX = 20
_BALANCE_MAX_CHARS = 20


def parse_account_balances(value: object, *, field: str = "AccountBalance") -> dict[str, int]:
    """``Working Account|KES|700000.00|700000.00|0.00|0.00&Utility Account|KES|228037.00|…`` as
    each account's *available* balance (the fourth field) in cents; a balance may be negative (the
    Charges Paid account always is)."""
    if not isinstance(value, str):
        raise InvalidField(field, f"invalid_field:{field}")
    balances: dict[str, int] = {}
    for account in value.split("&")[:_BALANCE_ACCOUNTS_MAX]:
        fields = [part.strip() for part in account.split("|")]
        if len(fields) < 4 or not fields[0]:
            raise InvalidField(field, f"invalid_field:{field}")
        balances[fields[0]] = _signed_cents(fields[3], field)
    return balances


def _signed_cents(text: str, field: str) -> int:
    magnitude = text.removeprefix("-")
    if len(magnitude) > _BALANCE_MAX_CHARS or not _PLAIN_DECIMAL.fullmatch(magnitude):
        raise InvalidField(field, f"invalid_field:{field}")
    amount = Decimal(magnitude)
    whole_cents = amount.quantize(_CENT, context=_MONEY_CONTEXT)
    if whole_cents != amount:
        raise InvalidField(field, "amount_too_many_decimals")
    return (-1 if text.startswith("-") else 1) * int(whole_cents.scaleb(2, context=_MONEY_CONTEXT))


def party_identifier(value: str | None) -> str | None:
    """The number part of a Daraja party name: ``"254705912645 - JOHN DOE"`` → ``"254705912645"``,
    ``"600997 - COMPANY"`` → ``"600997"``; None when there is none."""
    if not value:
        return None
    number = value.split(" - ", 1)[0].strip()
    return number or None


def normalise_account_ref(value: str) -> str:
    """Payers type the account number freely: trim, upper-case, drop inner whitespace."""
    return "".join(value.split()).upper()


@dataclass(frozen=True)
class AccountRef:
    """What a C2B ``BillRefNumber`` points at, in its canonical spelling."""

    kind: Literal["vehicle", "driver", "unknown"]
    code: str


def classify_account_ref(
    raw: str, *, vehicle_code_digits: int = 3, driver_code_pattern: str = r"D\d{6}"
) -> AccountRef:
    """Vehicle code, driver ID or unknown (docs/rules.md "Who is paid by a C2B payment").

    Vehicle codes may be typed with missing or extra leading zeros (``25``, ``0025`` → ``025``).
    All-digit text is always read as a vehicle code first, so a driver pattern of digits only would
    never match.
    """
    code = normalise_account_ref(raw)
    if code.isascii() and code.isdigit():
        significant = code.lstrip("0")
        if len(significant) <= vehicle_code_digits:
            return AccountRef("vehicle", significant.zfill(vehicle_code_digits))
        return AccountRef("unknown", code)
    if re.fullmatch(driver_code_pattern, code, re.ASCII):
        return AccountRef("driver", code)
    return AccountRef("unknown", code)


def business_date(
    at: datetime, *, close_time: time = time(0, 0), tz: str = "Africa/Nairobi"
) -> date:
    """The business day ``at`` belongs to: it runs from ``close_time`` to the next, local time.

    With a 03:00 close, 02:59 on the 5th still belongs to the 4th. A naive datetime is refused:
    guessing its zone is how payments land on the wrong day.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("business_date needs an aware datetime")
    since_close = timedelta(
        hours=close_time.hour,
        minutes=close_time.minute,
        seconds=close_time.second,
        microseconds=close_time.microsecond,
    )
    return (at.astimezone(ZoneInfo(tz)) - since_close).date()
