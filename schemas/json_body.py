"""Decoding a callback body: JSON whose non-integer numbers are decimals, never floats, and whose
size of numbers and depth of nesting are bounded.

Control characters inside strings are accepted (``strict=False``): Safaricom has sent a real
confirmation whose ``BillRefNumber`` held a raw newline (tests/samples/corpus,
``c2b_v2_newline_in_account_2024.json``), and refusing it would refuse real money. The account
reference is normalised (whitespace dropped) before it is matched.

Every number is checked before it is parsed: CPython refuses to parse an integer of more than 4,300
digits with a ``ValueError`` that ``json.loads`` does not turn into its own error, a decimal's
exponent can be past what ``Decimal`` holds, and no Daraja field is anywhere near
``NUMBER_MAX_CHARS``. Nesting deeper than ``MAX_DEPTH`` (Daraja's deepest body, the STK callback,
is six levels) is refused too, whether the decoder would have managed it or run out of stack.
The ingest and the workers decode with this one function, so they agree on what a body is.

Reasons: ``not_json``, ``number_too_long``, ``number_out_of_range``, ``too_deep``.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from schemas.callbacks import InvalidCallback

NUMBER_MAX_CHARS = 40  # a JSON number's text, sign, decimals and exponent included
MAX_DEPTH = 32  # objects and arrays inside one another; the body itself is depth 1


def _refuse_constant(name: str) -> object:
    raise InvalidCallback("not_json")  # NaN and Infinity are not JSON, and never money


def _bounded_int(text: str) -> int:
    if len(text) > NUMBER_MAX_CHARS:
        raise InvalidCallback("number_too_long")
    return int(text)


def _bounded_decimal(text: str) -> Decimal:
    if len(text) > NUMBER_MAX_CHARS:
        raise InvalidCallback("number_too_long")
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent past what a decimal holds, e.g. 1E+9999999999999999999
        raise InvalidCallback("number_out_of_range") from None


def decode_json(raw: bytes) -> object:
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_int=_bounded_int,
            parse_float=_bounded_decimal,
            parse_constant=_refuse_constant,
            strict=False,
        )
    except RecursionError as error:
        raise InvalidCallback("too_deep") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidCallback("not_json") from error
    if depth_exceeds(value, MAX_DEPTH):
        raise InvalidCallback("too_deep")
    return value


def depth_exceeds(value: object, limit: int) -> bool:
    """``value`` nests objects and arrays more than ``limit`` deep (walked without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: object = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))  # type: ignore[attr-defined]
    return False
