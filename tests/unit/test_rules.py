from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleetpay.rules import (
    payout_parts_cents,
    DayClose,
    DriverPaymentSplit,
    FareSplit,
    close_day,
    payout_amount_cents,
    split_driver_payment,
    split_fare,
)

KES = 100  # cents per shilling
TARGET = 3000 * KES

# --- fare split -------------------------------------------------------------------------------


def fare(amount_cents: int, **overrides: Any) -> FareSplit:
    arguments: dict[str, Any] = {
        "role": "regular",
        "fare_percent": 50,
        "target_cents": TARGET,
        "contributed_cents": 0,
        "target_sharing": True,
        "split_mode": "whole_payment",
        **overrides,
    }
    return split_fare(amount_cents, **arguments)


@pytest.mark.parametrize(
    ("amount_cents", "overrides", "share_kes", "contribution_cents"),
    [
        # target not met: the percentage split
        (200 * KES, {}, 100, 100 * KES),
        (200 * KES, {"fare_percent": 30}, 60, 140 * KES),
        (200 * KES, {"fare_percent": 100}, 200, 0),
        # target met and sharing: everything to the driver
        (200 * KES, {"contributed_cents": TARGET}, 200, 0),
        (200 * KES, {"contributed_cents": TARGET + 1}, 200, 0),
        (200 * KES, {"target_cents": 0}, 200, 0),
        # target met, no sharing: back to the percentage split, in both modes
        (200 * KES, {"contributed_cents": TARGET, "target_sharing": False}, 100, 100 * KES),
        (
            200 * KES,
            {"contributed_cents": TARGET, "target_sharing": False, "split_mode": "exact"},
            100,
            100 * KES,
        ),
        # a fare crossing the target: whole_payment splits it all by p ...
        (200 * KES, {"contributed_cents": TARGET - 50 * KES}, 100, 100 * KES),
        # ... exact keeps only the 50 KES left; the excess goes to the driver
        (200 * KES, {"contributed_cents": TARGET - 50 * KES, "split_mode": "exact"}, 150, 50 * KES),
        # exact, far from the target: same as the percentage split
        (200 * KES, {"split_mode": "exact"}, 100, 100 * KES),
        # substitutes always get the percentage split
        (200 * KES, {"role": "substitute", "contributed_cents": TARGET}, 100, 100 * KES),
        (
            200 * KES,
            {"role": "substitute", "contributed_cents": TARGET - 50 * KES, "split_mode": "exact"},
            100,
            100 * KES,
        ),
        # shares are whole shillings, rounded down; the cents go to the contribution
        (15_050, {}, 75, 7_550),
        (15_099, {"contributed_cents": TARGET}, 150, 99),
        (99, {"contributed_cents": TARGET}, 0, 99),
        (100, {"fare_percent": 1}, 0, 100),
        (199 * KES + 99, {"fare_percent": 100}, 199, 99),
        # exact with cents left to the target: the floor hands the company up to 99 cents more
        (
            200 * KES,
            {"contributed_cents": TARGET - 50 * KES - 1, "split_mode": "exact"},
            149,
            5_100,
        ),
    ],
)
def test_split_fare(
    amount_cents: int, overrides: dict[str, Any], share_kes: int, contribution_cents: int
) -> None:
    assert fare(amount_cents, **overrides) == FareSplit(share_kes * KES, contribution_cents)


@pytest.mark.parametrize(
    ("amount_cents", "overrides"),
    [
        (0, {}),
        (-100, {}),
        (100, {"fare_percent": 0}),
        (100, {"fare_percent": 101}),
        (100, {"target_cents": -1}),
        (100, {"contributed_cents": -1}),
        (100, {"role": "owner"}),
        (100, {"split_mode": "half"}),
    ],
)
def test_split_fare_rejects(amount_cents: int, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        fare(amount_cents, **overrides)


amounts = st.integers(min_value=1, max_value=25_000_000)
cents = st.integers(min_value=0, max_value=2_000_000)
fare_inputs = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["regular", "substitute"]),
        "fare_percent": st.integers(min_value=1, max_value=100),
        "target_cents": cents,
        "contributed_cents": cents,
        "target_sharing": st.booleans(),
        "split_mode": st.sampled_from(["whole_payment", "exact"]),
    }
)


@settings(max_examples=400)
@given(amounts, fare_inputs)
def test_split_fare_invariants(amount_cents: int, inputs: dict[str, Any]) -> None:
    split = split_fare(amount_cents, **inputs)
    assert split.driver_share_cents + split.contribution_cents == amount_cents
    assert split.driver_share_cents >= 0 and split.contribution_cents >= 0
    assert split.driver_share_cents % KES == 0


@settings(max_examples=200)
@given(amounts, fare_inputs)
def test_everything_to_the_driver_once_the_target_is_met_with_sharing(
    amount_cents: int, inputs: dict[str, Any]
) -> None:
    inputs.update(role="regular", target_sharing=True)
    inputs["contributed_cents"] = max(inputs["contributed_cents"], inputs["target_cents"])
    split = split_fare(amount_cents, **inputs)
    assert split.driver_share_cents == amount_cents // KES * KES
    assert split.contribution_cents < KES


@settings(max_examples=200)
@given(amounts, fare_inputs)
def test_substitutes_always_get_the_percentage_split(
    amount_cents: int, inputs: dict[str, Any]
) -> None:
    inputs["role"] = "substitute"
    split = split_fare(amount_cents, **inputs)
    assert split.driver_share_cents == amount_cents * inputs["fare_percent"] // (100 * KES) * KES


lefts = st.integers(min_value=1, max_value=2_000_000)


@settings(max_examples=400)
@given(amounts, fare_inputs, lefts)
def test_exact_never_collects_more_than_what_is_left(
    amount_cents: int, inputs: dict[str, Any], left_cents: int
) -> None:
    """For cents, the property is: contribution ≤ left + 99 (flooring the driver's share to whole
    shillings can hand the company up to 99 cents more than what was left)."""
    inputs.update(role="regular", split_mode="exact")
    inputs["target_cents"] = inputs["contributed_cents"] + left_cents
    split = split_fare(amount_cents, **inputs)
    assert split.contribution_cents <= left_cents + KES - 1


@settings(max_examples=300)
@given(amounts, fare_inputs, lefts)
def test_exact_never_collects_more_than_what_is_left_in_whole_shillings(
    amount_kes: int, inputs: dict[str, Any], left_kes: int
) -> None:
    """When the fare and what is left are whole shillings: contribution ≤ left, exactly."""
    inputs.update(role="regular", split_mode="exact")
    inputs["target_cents"] = inputs["contributed_cents"] + left_kes * KES
    split = split_fare(amount_kes * KES, **inputs)
    assert split.contribution_cents <= left_kes * KES


@settings(max_examples=400)
@given(amounts, fare_inputs)
def test_exact_pays_the_driver_at_least_as_much_as_whole_payment(
    amount_cents: int, inputs: dict[str, Any]
) -> None:
    """The company's part under whole_payment is never less than under exact."""
    exact = split_fare(amount_cents, **{**inputs, "split_mode": "exact"})
    whole = split_fare(amount_cents, **{**inputs, "split_mode": "whole_payment"})
    assert exact.driver_share_cents >= whole.driver_share_cents
    assert whole.contribution_cents >= exact.contribution_cents


# --- driver pays the company ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_cents", "target_cents", "contributed_cents", "expected"),
    [
        (1000 * KES, TARGET, 2500 * KES, DriverPaymentSplit(500 * KES, 500 * KES)),
        (300 * KES, TARGET, 2500 * KES, DriverPaymentSplit(300 * KES, 0)),
        (500 * KES, TARGET, 2500 * KES, DriverPaymentSplit(500 * KES, 0)),
        (500 * KES, TARGET, TARGET, DriverPaymentSplit(0, 500 * KES)),
        (500 * KES, TARGET, TARGET + 1, DriverPaymentSplit(0, 500 * KES)),
        (1, TARGET, 0, DriverPaymentSplit(1, 0)),
    ],
)
def test_split_driver_payment(
    amount_cents: int, target_cents: int, contributed_cents: int, expected: DriverPaymentSplit
) -> None:
    assert (
        split_driver_payment(
            amount_cents, target_cents=target_cents, contributed_cents=contributed_cents
        )
        == expected
    )


@pytest.mark.parametrize(
    ("amount", "target", "contributed"), [(0, 1, 0), (-1, 1, 0), (1, -1, 0), (1, 1, -1)]
)
def test_split_driver_payment_rejects(amount: int, target: int, contributed: int) -> None:
    with pytest.raises(ValueError):
        split_driver_payment(amount, target_cents=target, contributed_cents=contributed)


@settings(max_examples=300)
@given(amounts, cents, cents)
def test_split_driver_payment_sums(amount_cents: int, target_cents: int, contributed: int) -> None:
    split = split_driver_payment(
        amount_cents, target_cents=target_cents, contributed_cents=contributed
    )
    assert split.target_cents + split.deposit_cents == amount_cents
    assert 0 <= split.target_cents <= max(0, target_cents - contributed)
    assert split.deposit_cents >= 0
    # the deposit only gets money once the target is covered
    assert split.deposit_cents == 0 or contributed + split.target_cents >= target_cents


# --- payouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payable_cents", "minimum_cents", "expected"),
    [
        (0, 1000, 0),
        (999, 1000, 0),
        (1000, 1000, 1000),
        (1099, 1000, 1000),
        (10_050, 1000, 10_000),
        (1099, 1050, 0),  # 10 KES is below a 10.50 KES minimum
        (1100, 1050, 1100),
        (50, 100, 0),
    ],
)
def test_payout_amount(payable_cents: int, minimum_cents: int, expected: int) -> None:
    assert payout_amount_cents(payable_cents, minimum_cents=minimum_cents) == expected


@pytest.mark.parametrize(("payable", "minimum"), [(-1, 1000), (1000, 0), (1000, -1)])
def test_payout_amount_rejects(payable: int, minimum: int) -> None:
    with pytest.raises(ValueError):
        payout_amount_cents(payable, minimum_cents=minimum)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=100_000))
def test_payout_amount_properties(payable_cents: int, minimum_cents: int) -> None:
    payout = payout_amount_cents(payable_cents, minimum_cents=minimum_cents)
    assert 0 <= payout <= payable_cents
    assert payout == 0 or (payout % KES == 0 and payout >= minimum_cents)
    # nothing payable is held back once it reaches the minimum, except the odd cents
    if payable_cents // KES * KES >= minimum_cents:
        assert payable_cents - payout < KES


# --- daily close ------------------------------------------------------------------------------


def close(**overrides: Any) -> DayClose:
    arguments: dict[str, Any] = {
        "target_cents": TARGET,
        "contributed_cents": 0,
        "base_target_cents": TARGET,
        "consecutive_misses": 0,
        "termination_misses": 3,
        **overrides,
    }
    return close_day(**arguments)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"contributed_cents": TARGET}, DayClose(True, 0, TARGET, 0, False)),
        (
            {"contributed_cents": TARGET + 1, "consecutive_misses": 2},
            DayClose(True, 0, TARGET, 0, False),
        ),
        (
            {"contributed_cents": 2000 * KES, "consecutive_misses": 1},
            DayClose(False, 1000 * KES, 4000 * KES, 2, False),
        ),
        ({"consecutive_misses": 2}, DayClose(False, TARGET, 2 * TARGET, 3, True)),
        ({"consecutive_misses": 5}, DayClose(False, TARGET, 2 * TARGET, 6, True)),
        ({"termination_misses": 1}, DayClose(False, TARGET, 2 * TARGET, 1, True)),
        # today's target holds a carry of 1000 KES; paying exactly it clears the carry
        (
            {"target_cents": 4000 * KES, "contributed_cents": 4000 * KES, "consecutive_misses": 1},
            DayClose(True, 0, TARGET, 0, False),
        ),
        # paused: neutral (no bonus, no miss, no rollover)
        (
            {"role_paused": True, "target_cents": 4000 * KES, "consecutive_misses": 2},
            DayClose(False, 0, TARGET, 2, False),
        ),
    ],
)
def test_close_day(overrides: dict[str, Any], expected: DayClose) -> None:
    assert close(**overrides) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"target_cents": -1},
        {"contributed_cents": -1},
        {"base_target_cents": -1},
        {"consecutive_misses": -1},
        {"termination_misses": 0},
    ],
)
def test_close_day_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        close(**overrides)


def test_three_missed_days_roll_over_once() -> None:
    """docs/rules.md: tomorrow = base + outstanding shortfall; never today's target + shortfall."""
    day1 = close(contributed_cents=2000 * KES)
    assert day1 == DayClose(False, 1000 * KES, 4000 * KES, 1, False)
    day2 = close(
        target_cents=day1.next_target_cents,
        contributed_cents=3000 * KES,
        consecutive_misses=day1.consecutive_misses,
    )
    # the older system would say 4000 + 1000 + 3000 = 8000 … here the debt is still 1000
    assert day2 == DayClose(False, 1000 * KES, 4000 * KES, 2, False)
    day3 = close(
        target_cents=day2.next_target_cents,
        contributed_cents=0,
        consecutive_misses=day2.consecutive_misses,
    )
    assert day3 == DayClose(False, 4000 * KES, 7000 * KES, 3, True)


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=1_000_000),
    st.lists(st.integers(min_value=0, max_value=2_000_000), min_size=1, max_size=10),
)
def test_rollover_is_exactly_the_outstanding_debt(
    base_cents: int, contributions: list[int]
) -> None:
    """Over any run of days, tomorrow's target = base + (targets owed − money paid) while missed."""
    target_cents, misses, owed_cents, paid_cents = base_cents, 0, 0, 0
    for contributed in contributions:
        day = close_day(
            target_cents=target_cents,
            contributed_cents=contributed,
            base_target_cents=base_cents,
            consecutive_misses=misses,
            termination_misses=3,
        )
        owed_cents, paid_cents = owed_cents + base_cents, paid_cents + contributed
        if day.met:
            owed_cents = paid_cents = 0  # a met day clears the debt; overpayment is not carried
            assert (day.next_target_cents, day.consecutive_misses) == (base_cents, 0)
        else:
            assert day.next_target_cents == base_cents + owed_cents - paid_cents
            assert day.consecutive_misses == misses + 1
        assert day.flag_termination == (day.consecutive_misses >= 3)
        target_cents, misses = day.next_target_cents, day.consecutive_misses


# --- payouts larger than B2C's maximum -------------------------------------------------------

MAX_CENTS, MIN_CENTS = 25_000_000, 1_000


@pytest.mark.parametrize(
    ("amount_cents", "parts"),
    [
        (1_000, [1_000]),
        (25_000_000, [25_000_000]),
        (25_000_100, [24_999_100, 1_000]),  # the last part is topped up to the KES 10 minimum
        (26_000_000, [25_000_000, 1_000_000]),
        (60_000_000, [25_000_000, 25_000_000, 10_000_000]),
        (75_000_000, [25_000_000] * 3),
    ],
)
def test_payout_parts(amount_cents: int, parts: list[int]) -> None:
    assert payout_parts_cents(amount_cents, maximum_cents=MAX_CENTS, minimum_cents=MIN_CENTS) == parts


@given(st.integers(min_value=10, max_value=2_000_000).map(lambda kes: kes * 100),
       st.integers(min_value=20, max_value=300_000).map(lambda kes: kes * 100))
def test_payout_parts_are_whole_bounded_and_add_up(amount_cents: int, maximum_cents: int) -> None:
    assume(amount_cents // maximum_cents <= 1_000)  # a bounded number of parts: fast examples
    parts = payout_parts_cents(amount_cents, maximum_cents=maximum_cents, minimum_cents=MIN_CENTS)
    assert sum(parts) == amount_cents
    assert all(MIN_CENTS <= part <= maximum_cents and part % 100 == 0 for part in parts)
    assert len(parts) == -(-amount_cents // maximum_cents)  # as few payments as the maximum allows


def test_payout_parts_refuse_what_b2c_cannot_pay() -> None:
    with pytest.raises(ValueError):
        payout_parts_cents(999, maximum_cents=MAX_CENTS, minimum_cents=MIN_CENTS)
    with pytest.raises(ValueError):
        payout_parts_cents(1_050, maximum_cents=MAX_CENTS, minimum_cents=MIN_CENTS)


@pytest.mark.parametrize(
    "changes",
    [{"b2c_maximum_cents": 1_500}, {"b2c_maximum_cents": 25_000_050}, {"b2c_minimum_cents": 1_050},
     {"daraja_b2c_consumer_key": "key-without-its-secret"}],
)
def test_settings_that_would_fail_later_are_refused_when_read(changes: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from fleetpay.settings import Settings

    with pytest.raises(ValidationError):
        Settings(**changes)
