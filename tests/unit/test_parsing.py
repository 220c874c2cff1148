from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.parsing import (
    EAT,
    AccountRef,
    InvalidField,
    business_date,
    classify_account_ref,
    normalise_account_ref,
    normalise_msisdn,
    parse_amount_cents,
    parse_b2c_completed_time,
    parse_mpesa_time,
    require_msisdn,
)

# --- amounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        ("200.00", 20_000),
        ("200", 20_000),
        (" 5.00 ", 500),
        ("0.01", 1),
        ("10.5", 1050),
        ("1.500", 150),  # more digits, but still a whole number of cents
        ("007", 700),
        (200, 20_000),
        (Decimal("1.00"), 100),
        (Decimal("1"), 100),
        (Decimal("1E+3"), 100_000),  # a JSON number 1e3 decoded with parse_float=Decimal
        ("500000.00", 50_000_000),
    ],
)
def test_parse_amount_accepts(value: object, cents: int) -> None:
    assert parse_amount_cents(value) == cents


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "amount_not_numeric"),
        (False, "amount_not_numeric"),
        (1.0, "amount_float"),
        (None, "amount_not_numeric"),
        ("abc", "amount_not_numeric"),
        ("", "amount_not_numeric"),
        ("   ", "amount_not_numeric"),
        ("1e9", "amount_not_numeric"),
        ("1E2", "amount_not_numeric"),
        ("NaN", "amount_not_numeric"),
        ("Infinity", "amount_not_numeric"),
        ("1,000.00", "amount_not_numeric"),
        ("1.", "amount_not_numeric"),
        (".5", "amount_not_numeric"),
        ("+5", "amount_not_numeric"),
        ("٥", "amount_not_numeric"),  # Arabic-Indic five: digits are ASCII only
        (Decimal("NaN"), "amount_not_numeric"),
        (Decimal("Infinity"), "amount_not_numeric"),
        ([1], "amount_not_numeric"),
        ("-5", "amount_negative"),
        (-5, "amount_negative"),
        (Decimal("-0.01"), "amount_negative"),
        ("0", "amount_zero"),
        ("0.00", "amount_zero"),
        ("-0", "amount_zero"),
        (0, "amount_zero"),
        ("1.005", "amount_too_many_decimals"),
        ("0.001", "amount_too_many_decimals"),
        ("1.0000000000000000000000000000000000000001", "amount_too_many_decimals"),
        (Decimal("1E-999999"), "amount_too_many_decimals"),
        ("500000.01", "amount_too_large"),
        (500_001, "amount_too_large"),  # an int counts shillings
        (Decimal("1E+9"), "amount_too_large"),
        (Decimal("1E+999999"), "amount_too_large"),
    ],
)
def test_parse_amount_rejects(value: object, reason: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_amount_cents(value, field="TransAmount")
    assert (caught.value.field, caught.value.reason) == ("TransAmount", reason)


def test_parse_amount_max_is_a_parameter() -> None:
    assert parse_amount_cents("10.00", max_cents=1000) == 1000
    with pytest.raises(InvalidField, match="amount_too_large"):
        parse_amount_cents("10.01", max_cents=1000)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=50_000_000))
def test_parse_amount_round_trips_every_cents_value(cents: int) -> None:
    text = f"{cents // 100}.{cents % 100:02d}"
    assert parse_amount_cents(text) == cents
    assert parse_amount_cents(Decimal(text)) == cents


# --- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["20240815143012", 20240815143012])
def test_parse_mpesa_time(value: object) -> None:
    parsed = parse_mpesa_time(value)
    assert parsed == datetime(2024, 8, 15, 14, 30, 12, tzinfo=EAT)
    assert parsed.utcoffset() == timedelta(hours=3)
    assert parsed.astimezone(UTC) == datetime(2024, 8, 15, 11, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2024081514301",  # 13 digits
        "202408151430120",  # 15 digits
        "20241301120000",  # month 13
        "20240230120000",  # 30 February
        "20240815250000",  # hour 25
        "20240815126000",  # minute 60
        "2024-08-15 14:30",
        "2024081514301a",
        " 20240815143012",
        "",
        None,
        True,
        20240815143012.0,
        -2024081514301,
        Decimal("20240815143012"),
    ],
)
def test_parse_mpesa_time_rejects(value: object) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_mpesa_time(value, field="TransactionDate")
    assert (caught.value.field, caught.value.reason) == ("TransactionDate", "time_invalid")


def test_parse_mpesa_time_leap_day() -> None:
    assert parse_mpesa_time("20240229000000").date() == date(2024, 2, 29)


def test_parse_b2c_completed_time() -> None:
    assert parse_b2c_completed_time("06.07.2024 22:48:52") == datetime(
        2024, 7, 6, 22, 48, 52, tzinfo=EAT
    )


@pytest.mark.parametrize(
    "value",
    ["06.07.2024", "2024-07-06 22:48:52", "31.02.2024 10:00:00", "6.7.2024 22:48:52", "", None, 1],
)
def test_parse_b2c_completed_time_rejects(value: object) -> None:
    with pytest.raises(InvalidField, match="time_invalid"):
        parse_b2c_completed_time(value)


# --- phone numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "msisdn"),
    [
        ("0712345678", "254712345678"),
        ("0112345678", "254112345678"),
        ("+254712345678", "254712345678"),
        ("254712345678", "254712345678"),
        ("254112345678", "254112345678"),
        ("712345678", "254712345678"),
        ("0712 345 678", "254712345678"),
        ("0712-345-678", "254712345678"),
        ("+254 712 345 678", "254712345678"),
        (254708374149, "254708374149"),
        (712345678, "254712345678"),
    ],
)
def test_normalise_msisdn(value: object, msisdn: str) -> None:
    assert normalise_msisdn(value) == msisdn
    assert require_msisdn(value) == msisdn


@pytest.mark.parametrize(
    "value",
    [
        "2547 ***** 149",  # C2B v2 masked
        "25470****149",
        "0f3b1a9c5e2d4b6a8c7e9f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c",  # v1 hashed
        "0812345678",  # not a Kenyan mobile range
        "07123456789",  # too long
        "071234567",  # too short
        "2540712345678",
        "+0712345678",
        "255712345678",  # Tanzania
        "",
        None,
        True,
        7.12345678e8,
    ],
)
def test_normalise_msisdn_rejects(value: object) -> None:
    assert normalise_msisdn(value) is None
    with pytest.raises(InvalidField) as caught:
        require_msisdn(value)
    assert (caught.value.field, caught.value.reason) == ("msisdn", "msisdn_invalid")


# --- account references -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [(" d112 006 ", "D112006"), ("025", "025"), ("\t0 2 5\n", "025"), ("", ""), ("inv-1", "INV-1")],
)
def test_normalise_account_ref(raw: str, normalised: str) -> None:
    assert normalise_account_ref(raw) == normalised


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("025", AccountRef("vehicle", "025")),
        ("25", AccountRef("vehicle", "025")),
        ("7", AccountRef("vehicle", "007")),
        (" 0 25 ", AccountRef("vehicle", "025")),
        ("0025", AccountRef("vehicle", "025")),
        ("000114", AccountRef("vehicle", "114")),
        ("0", AccountRef("vehicle", "000")),
        ("1234", AccountRef("unknown", "1234")),
        ("D112006", AccountRef("driver", "D112006")),
        ("d112006", AccountRef("driver", "D112006")),
        (" d 112 006 ", AccountRef("driver", "D112006")),
        ("D11200", AccountRef("unknown", "D11200")),
        ("D1120060", AccountRef("unknown", "D1120060")),
        ("D١١٢٠٠٦", AccountRef("unknown", "D١١٢٠٠٦")),  # non-ASCII digits
        ("٠٢٥", AccountRef("unknown", "٠٢٥")),
        ("INV-10422", AccountRef("unknown", "INV-10422")),
        ("", AccountRef("unknown", "")),
    ],
)
def test_classify_account_ref(raw: str, expected: AccountRef) -> None:
    assert classify_account_ref(raw) == expected


def test_classify_account_ref_settings() -> None:
    assert classify_account_ref("25", vehicle_code_digits=4) == AccountRef("vehicle", "0025")
    assert classify_account_ref("kbx123", driver_code_pattern=r"KB[A-Z]\d{3}") == AccountRef(
        "driver", "KBX123"
    )


# --- business day -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "close", "expected"),
    [
        (datetime(2024, 8, 5, 0, 0, tzinfo=EAT), time(0, 0), date(2024, 8, 5)),
        (datetime(2024, 8, 4, 23, 59, 59, tzinfo=EAT), time(0, 0), date(2024, 8, 4)),
        (datetime(2024, 8, 5, 2, 59, tzinfo=EAT), time(3, 0), date(2024, 8, 4)),
        (datetime(2024, 8, 5, 3, 0, tzinfo=EAT), time(3, 0), date(2024, 8, 5)),
        # 21:30 UTC on the 4th is 00:30 EAT on the 5th
        (datetime(2024, 8, 4, 21, 30, tzinfo=UTC), time(0, 0), date(2024, 8, 5)),
        (datetime(2024, 1, 1, 1, 0, tzinfo=EAT), time(3, 0), date(2023, 12, 31)),
    ],
)
def test_business_date(at: datetime, close: time, expected: date) -> None:
    assert business_date(at, close_time=close) == expected


def test_business_date_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        business_date(datetime(2024, 8, 5, 12, 0))


@settings(max_examples=200)
@given(
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)),
    st.times(),
)
def test_business_date_is_the_day_the_last_close_fell_on(naive: datetime, close: time) -> None:
    at = naive.replace(tzinfo=EAT)
    day = business_date(at, close_time=close)
    opened = datetime.combine(day, close, tzinfo=EAT)
    assert opened <= at < opened + timedelta(days=1)
