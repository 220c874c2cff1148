"""A money request as the ``/admin`` API receives it (``POST /admin/requests``): which kind, its
parameters, the reason. Pure: every value is type-checked and bounded here, so what reaches the
money layer is a dict of the shapes it expects, and bad input is a 400 saying which field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

REASON_MAX_CHARS = 500
TEXT_MAX_CHARS = 64
ID_MAX = 10**15  # ids are BIGINT; nothing bigger is a row of ours
AMOUNT_MAX_CENTS = 10**13


class InvalidRequest(ValueError):
    """The body is not a request we accept; the message says which field and why."""


@dataclass(frozen=True)
class AskedFor:
    kind: str
    params: dict[str, Any]
    reason: str


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > TEXT_MAX_CHARS or "\x00" in value:
        raise InvalidRequest(f"{field} is a non-empty string of at most {TEXT_MAX_CHARS} characters")
    return value.strip()


def _id(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < ID_MAX:
        raise InvalidRequest(f"{field} is a whole number above 0")
    return value


def _driver(value: Any, field: str) -> str:
    return _text(value, field).upper()


def _amount(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= AMOUNT_MAX_CENTS:
        raise InvalidRequest(f"{field} is a whole number of cents above 0, or null for all of it")
    return value


def _as(value: Any, field: str) -> str:
    if value not in ("fare", "company"):
        raise InvalidRequest(f"{field} is fare or company")
    return str(value)


def _day(value: Any, field: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise InvalidRequest(f"{field} is a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError as error:
        raise InvalidRequest(f"{field} is a date YYYY-MM-DD ({error})") from error


# Each kind's parameters: (required, optional), each field with its parser.
FIELDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "unmatched_assign": ({"trans_id": _text, "driver": _driver}, {"as": _as}),
    "deposit_refund": ({"driver": _driver}, {"amount_cents": _amount}),
    "payout_retry": ({"payout_id": _id}, {}),
    "payout_approve": ({"payout_id": _id}, {}),
    "payout_withdraw": ({"payout_id": _id}, {}),
    "payout_resolve": ({"payout_id": _id}, {}),
    "close_undo": ({"date": _day}, {}),
    "reconcile_fix": ({}, {}),
}


def parse_money_request(body: Any) -> AskedFor:
    """``{"kind": …, "params": {…}, "reason": …}`` checked field by field; ``InvalidRequest``."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body is a JSON object")
    if unknown := sorted(set(body) - {"kind", "params", "reason"}):
        raise InvalidRequest(f"unknown fields {unknown}; allowed: kind, params, reason")
    kind = body.get("kind")
    if kind not in FIELDS:
        raise InvalidRequest(f"kind is one of {', '.join(FIELDS)}")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX_CHARS or "\x00" in reason:
        raise InvalidRequest(f"reason says why, in at most {REASON_MAX_CHARS} characters")
    raw = body.get("params", {})
    if not isinstance(raw, dict):
        raise InvalidRequest("params is a JSON object")
    required, optional = FIELDS[kind]
    if unknown := sorted(set(raw) - set(required) - set(optional)):
        raise InvalidRequest(f"unknown params {unknown} for {kind}; allowed: {sorted({*required, *optional})}")
    if missing := sorted(set(required) - set(raw)):
        raise InvalidRequest(f"{kind} needs params {missing}")
    params = {name: parse(raw[name], f"params.{name}") for name, parse in {**required, **optional}.items() if name in raw}
    return AskedFor(kind, params, reason.strip())
