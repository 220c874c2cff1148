"""The names people act under (``fleetpay.people``): one spelling per person, lookalikes refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetpay.people import BadName, operator_name, same_person


@pytest.mark.parametrize("raw", ["amina\u200b", "\u0430mina", "", " ", "1amina", "a" * 65, "amina;drop", "am\u0131na"])
def test_lookalike_and_odd_names_are_refused(raw: str) -> None:
    with pytest.raises(BadName):
        operator_name(raw)


def test_one_person_however_typed() -> None:
    assert operator_name("  Amina   Wanjiru ") == "Amina Wanjiru"
    assert operator_name("\uff41\uff4d\uff49\uff4e\uff41") == "amina"  # full-width letters are plain letters
    assert same_person("amina", " AMINA ") and same_person("\uff41mina", "amina") and not same_person("amina", "bob")


@given(st.text(max_size=80))
def test_any_text_is_a_plain_name_or_refused(raw: str) -> None:
    try:
        name = operator_name(raw)
    except BadName:
        return
    assert name.isascii() and name == name.strip() and "  " not in name and operator_name(name) == name
