"""The USSD menu: every path of input, hostile input included, answers CON or END within a screen."""

from __future__ import annotations

from hypothesis import given, strategies as st

from fleetpay.ussd_menu import SCREEN_CHARS_MAX, UNKNOWN_NUMBER, DriverFacts, PayoutLine, answer

FACTS = DriverFacts(
    code="D112006", language="en", business_date="2026-11-30", target_cents=300_000, contributed_cents=240_000,
    payable_cents=12_000, in_flight_cents=60_000,
    payouts=(PayoutLine(60_000, "submitted", None, "2026-11-30"), PayoutLine(150_000, "paid", "TK4AB12CDE", "2026-11-29"),
             PayoutLine(90_000, "failed", None, "2026-11-28")),
)


def test_dialling_shows_the_main_menu() -> None:
    reply = answer("", FACTS)
    assert reply.text == "CON fleetpay D112006\n1. Today\n2. My money\n3. Last payouts\n4. Statement by SMS"


def test_each_screen_shows_the_drivers_numbers() -> None:
    assert answer("1", FACTS).text == "CON Today 30/11: paid KES 2,400 of KES 3,000 target. KES 600 to go.\n0. Back"
    assert answer("2", FACTS).text == "CON Payable now: KES 120\nOn its way to M-Pesa: KES 600\n0. Back"
    assert answer("3", FACTS).text == (
        "CON 30/11 KES 600 on its way\n29/11 KES 1,500 TK4AB12CDE\n28/11 KES 900 not paid, back in payable\n0. Back")


def test_a_statement_is_asked_for_only_once_confirmed() -> None:
    assert not answer("4", FACTS).statement_requested
    assert answer("4", FACTS).text.startswith("CON Send your statement")
    done = answer("4*1", FACTS)
    assert done.statement_requested and done.text == "END Your statement is on its way by SMS."
    assert answer("4*0", FACTS).text == answer("", FACTS).text


def test_back_and_unexpected_input_return_to_the_menu() -> None:
    assert answer("1*0", FACTS).text == answer("", FACTS).text
    assert answer("9", FACTS).text == "CON Invalid choice.\n" + answer("", FACTS).text.removeprefix("CON ")
    assert answer("1*7", FACTS).text.startswith("CON Invalid choice.")
    assert answer("1*0*2", FACTS).text == answer("2", FACTS).text


def test_swahili() -> None:
    sw = DriverFacts(**{**FACTS.__dict__, "language": "sw"})
    assert answer("", sw).text.endswith("4. Taarifa kwa SMS")
    assert answer("1", sw).text.startswith("CON Leo 30/11: umelipa KES 2,400 kati ya lengo KES 3,000.")


def test_an_unknown_number_gets_a_polite_end() -> None:
    assert answer("", None) is UNKNOWN_NUMBER and UNKNOWN_NUMBER.text.startswith("END ")


@given(text=st.text(max_size=300), language=st.sampled_from(["en", "sw"]),
       amounts=st.lists(st.integers(0, 25_000_000), min_size=5, max_size=5))
def test_any_input_gets_a_screen_never_an_error(text: str, language: str, amounts: list[int]) -> None:
    facts = DriverFacts(code="D999999", language=language, business_date="2026-12-31", target_cents=amounts[0],
                        contributed_cents=amounts[1], payable_cents=amounts[2], in_flight_cents=amounts[3],
                        payouts=tuple(PayoutLine(amounts[4], "paid", "TK4AB12CDE", "2026-12-31") for _ in range(3)))
    reply = answer(text, facts)
    assert reply.text.startswith(("CON ", "END "))
    assert len(reply.text) - 4 <= SCREEN_CHARS_MAX


@given(steps=st.lists(st.sampled_from(["0", "1", "2", "3", "4", "5", "", "00", " 1"]), max_size=40))
def test_menu_paths_against_a_model(steps: list[str]) -> None:
    """An independent model of the walk: where each path of choices ends up."""
    screen, ended, invalid = None, False, False
    if len(steps) <= 30:
        for step in steps:
            step, invalid = step.strip(), False  # a stray space is the same choice
            if screen is None:
                screen, invalid = (step, False) if step in ("1", "2", "3", "4") else (None, True)
            elif step == "0":
                screen = None
            elif screen == "4" and step == "1":
                ended = True
                break
            else:
                screen, invalid = None, True
    text = "*".join(steps)
    reply = answer(text, FACTS)
    if text.strip() == "" or len(steps) > 30:
        assert reply.text == answer("", FACTS).text
    elif ended:
        assert reply.statement_requested
    elif screen is None:
        assert reply.text.startswith("CON Invalid choice." if invalid else "CON fleetpay")
    else:
        assert reply.text == answer(screen, FACTS).text
