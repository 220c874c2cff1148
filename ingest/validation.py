"""The C2B validation answer (pure): accept, or the Daraja reject code that fits.

Validation runs only when the shortcode has external validation switched on. It must answer well
inside Safaricom's ~8 s, so it decides from one indexed lookup and never waits on a queue.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Literal

from schemas.parsing import AccountRef

ACCEPT = "0"
INVALID_ACCOUNT = "C2B00012"
INVALID_AMOUNT = "C2B00013"
OTHER_ERROR = "C2B00016"

AccountState = Literal["payable", "unknown"]


def within_hours(at: time, start: time, end: time) -> bool:
    """Whether ``at`` lies in [start, end); an ``end`` of 00:00 means midnight at the day's end,
    and an ``end`` before ``start`` is a window across midnight."""
    if end == time(0, 0):
        return at >= start
    if start <= end:
        return start <= at < end
    return at >= start or at < end


def validation_code(
    ref: AccountRef,
    account_state: AccountState,
    *,
    now: datetime,
    hours_start: time,
    hours_end: time,
    outside_hours_code: str,
) -> str:
    if ref.kind == "unknown" or account_state == "unknown":
        return INVALID_ACCOUNT
    if ref.kind == "vehicle" and not within_hours(now.timetz().replace(tzinfo=None), hours_start, hours_end):
        return outside_hours_code
    return ACCEPT
