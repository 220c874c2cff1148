"""Decoding a callback body is bounded: every number is refused before it is parsed when it is too
long to be a Daraja value, and nesting deeper than any Daraja body is refused, each with a reason of
its own (never an uncaught error, whatever the bytes). A transaction time far outside the years M-Pesa
can send is refused by the parser the ingest and the worker share."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.callbacks import InvalidCallback, parse_c2b
from schemas.json_body import MAX_DEPTH, NUMBER_MAX_CHARS, decode_json
from schemas.parsing import EAT, InvalidField, parse_b2c_completed_time, parse_mpesa_time


def reason_of(raw: bytes) -> str:
    with pytest.raises(InvalidCallback) as caught:
        decode_json(raw)
    return caught.value.reason


# --- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "1" * 5000,  # past CPython's int digit limit: a ValueError json.loads does not turn into its own
        "-" + "9" * 4300,  # within that limit, still no Daraja value
        "1" * (NUMBER_MAX_CHARS + 1),
        "1." + "5" * 5000,
        "1" * 3000 + "e5",
    ],
    ids=["5000 digits", "4300 digits", "one digit too many", "5000 decimals", "long mantissa"],
)
def test_an_overlong_number_is_refused_before_it_is_parsed(number: str) -> None:
    assert reason_of(f'{{"TransAmount": {number}}}'.encode()) == "number_too_long"
    assert reason_of(f'[{number}]'.encode()) == "number_too_long"


@pytest.mark.parametrize("number", ["1E+9999999999999999999", "1e-9999999999999999999"])
def test_a_number_beyond_what_a_decimal_holds_is_refused(number: str) -> None:
    assert reason_of(f'{{"ResultCode": {number}}}'.encode()) == "number_out_of_range"


def test_numbers_up_to_the_bound_decode_as_before() -> None:
    longest = "9" * NUMBER_MAX_CHARS
    assert decode_json(f'{{"a": {longest}, "b": 1.50, "c": 254708374149, "d": -0}}'.encode()) == {
        "a": int(longest),
        "b": Decimal("1.50"),
        "c": 254708374149,
        "d": 0,
    }


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_constants_are_still_not_json(constant: str) -> None:
    assert reason_of(f'{{"TransAmount": {constant}}}'.encode()) == "not_json"


# --- nesting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 50_000])
def test_nesting_deeper_than_any_daraja_body_is_refused(depth: int) -> None:
    assert reason_of(b'{"a": ' + b"[" * depth + b"]" * depth + b"}") == "too_deep"
    assert reason_of(b'{"a": ' + b'{"b": ' * depth + b"1" + b"}" * depth + b"}") == "too_deep"


def test_nesting_up_to_the_bound_is_decoded() -> None:
    depth = MAX_DEPTH
    value = decode_json(b"[" * depth + b"]" * depth)
    for _ in range(depth - 1):
        [value] = value  # type: ignore[misc]
    assert value == []


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = '{"Remarks": "' + "[{" * 500 + '"}'
    assert decode_json(text.encode()) == {"Remarks": "[{" * 500}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        decode_json(raw)
    except InvalidCallback as refused:
        assert refused.reason in {"not_json", "number_too_long", "number_out_of_range", "too_deep"}


# --- transaction times --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["00010101000000", "19991231235959", "21010101000000", "99991231235959", 21010101000000])
def test_a_transaction_time_outside_the_sane_years_is_refused(value: object) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_mpesa_time(value, field="TransTime")
    assert (caught.value.field, caught.value.reason) == ("TransTime", "time_out_of_range")


@pytest.mark.parametrize("value", ["01.01.0001 00:00:00", "31.12.9999 23:59:59"])
def test_a_b2c_completion_time_outside_the_sane_years_is_refused(value: str) -> None:
    with pytest.raises(InvalidField, match="time_out_of_range"):
        parse_b2c_completed_time(value)


@pytest.mark.parametrize(("value", "year"), [("20000101000000", 2000), ("21001231235959", 2100)])
def test_the_first_and_last_sane_years_are_accepted(value: str, year: int) -> None:
    assert parse_mpesa_time(value).year == year


@pytest.mark.parametrize("year", ["0001", "9999"])
def test_parse_c2b_refuses_a_confirmation_from_an_impossible_year(year: str) -> None:
    body = {"TransID": "SHK3QX7T2M", "TransTime": f"{year}0815143012", "TransAmount": "200.00", "BillRefNumber": "025"}
    with pytest.raises(InvalidCallback) as caught:
        parse_c2b(body)
    assert caught.value.reason == "time_out_of_range"
    body["TransTime"] = "20240815143012"
    assert parse_c2b(body).trans_time == datetime(2024, 8, 15, 14, 30, 12, tzinfo=EAT)


def test_a_raw_control_character_inside_a_string_is_accepted_as_safaricom_sent_it() -> None:
    """tests/samples/corpus/c2b_v2_newline_in_account_2024.json: a real confirmation's BillRefNumber
    held a raw newline; refusing the body would refuse the money."""
    assert decode_json(b'{"BillRefNumber": "\nM1", "Tab": "a\tb"}') == {"BillRefNumber": "\nM1", "Tab": "a\tb"}
