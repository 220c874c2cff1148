"""Decoding a callback body: strict JSON whose non-integer numbers are decimals, never floats."""

from __future__ import annotations

import json
from decimal import Decimal

from schemas.callbacks import InvalidCallback


def _refuse_constant(name: str) -> object:
    raise InvalidCallback("not_json")  # NaN and Infinity are not JSON, and never money


def decode_json(raw: bytes) -> object:
    try:
        return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InvalidCallback("not_json") from error
