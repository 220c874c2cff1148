"""The drivers' SMS texts: amounts, segments, both languages, every kind within one segment."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, strategies as st

from fleetpay.notice_texts import LANGUAGES, NOTICE_KINDS, SMS_SEGMENTS_MAX, compose, gsm7_septets, kes, segments

AMOUNTS = st.integers(min_value=0, max_value=25_000_000)  # up to M-Pesa's KES 250,000
RECEIPTS = st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True)  # any TransID the parser lets through


def test_amounts_are_shillings_with_thousands_separators() -> None:
    assert kes(0) == "KES 0"
    assert kes(125_000) == "KES 1,250"
    assert kes(125_050) == "KES 1,250.50"
    assert kes(25_000_000) == "KES 250,000"
    assert kes(-30_000) == "-KES 300"


def test_segments_follow_gsm_03_38() -> None:
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2  # 153 per part once split
    assert segments("a" * 306) == 2
    assert segments("a" * 307) == 3
    assert segments("€" * 80) == 1  # an extension character takes two septets
    assert segments("€" * 81) == 2
    assert segments("ş" + "a" * 69) == 1  # outside GSM-7: UCS-2, 70 per segment
    assert segments("ş" + "a" * 70) == 2
    assert segments("😀" * 35) == 1  # two UTF-16 units each
    assert gsm7_septets("Asante!") == 7


def _facts(kind: str, amount: int, other: int, receipt: str, misses: int, met: bool) -> dict:
    day = date(2026, 11, 30)
    return {
        "payment": {"amount_cents": amount, "receipt": receipt, "vehicle": "025", "contributed_cents": other,
                    "target_cents": 300_000, "share_cents": amount // 2},
        "payout_paid": {"amount_cents": amount, "receipt": receipt},
        "payout_delayed": {"amount_cents": amount},
        "daily_summary": {"business_date": day.isoformat(), "contributed_cents": other, "target_cents": 9_000_000,
                          "carried_cents": amount, "met": met, "misses": misses, "misses_max": 3},
        "termination_warning": {"misses": misses},
        "deposit_refund": {"amount_cents": amount},
        "statement": {"days": [[(day - timedelta(days=i)).isoformat(), other, 9_000_000] for i in range(6, -1, -1)],
                      "contributed_cents": other * 7, "target_cents": 63_000_000, "paid_out_cents": amount},
    }[kind]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", [k for k in NOTICE_KINDS if k != "statement"])
@given(amount=AMOUNTS, other=AMOUNTS, receipt=RECEIPTS, misses=st.integers(0, 99), met=st.booleans())
def test_every_notice_but_the_statement_fits_one_gsm7_segment(kind, language, amount, other, receipt, misses, met) -> None:
    text = compose(kind, _facts(kind, amount, other, receipt, misses, met), language)
    assert gsm7_septets(text) is not None, text
    assert segments(text) == 1, (len(text), text)


@pytest.mark.parametrize("language", LANGUAGES)
@given(amount=AMOUNTS, other=AMOUNTS)
def test_the_weekly_statement_is_gsm7_and_bounded(language, amount, other) -> None:
    text = compose("statement", _facts("statement", amount, other, "X", 0, False), language)
    assert gsm7_septets(text) is not None
    assert segments(text) <= SMS_SEGMENTS_MAX


def test_a_payment_says_what_the_driver_needs() -> None:
    facts = {"amount_cents": 120_000, "receipt": "TK4AB12CDE", "vehicle": "025", "contributed_cents": 240_000,
             "target_cents": 300_000, "share_cents": 60_000}
    assert compose("payment", facts, "en") == (
        "fleetpay: KES 1,200 received, TK4AB12CDE vehicle 025. Today KES 2,400 of KES 3,000 target. Your share KES 600.")
    assert compose("payment", {**facts, "contributed_cents": 300_000}, "sw") == (
        "fleetpay: KES 1,200 imepokelewa, TK4AB12CDE gari 025. Lengo la leo limefikiwa (KES 3,000). Sehemu yako KES 600.")


def test_a_summary_of_a_missed_day_names_the_shortfall_and_the_misses() -> None:
    facts = {"business_date": "2026-11-30", "contributed_cents": 240_000, "target_cents": 300_000,
             "carried_cents": 60_000, "met": False, "misses": 1, "misses_max": 3}
    assert compose("daily_summary", facts, "en") == (
        "fleetpay 30/11: you paid KES 2,400 of KES 3,000 target. Shortfall KES 600 added to tomorrow. Missed days: 1/3.")


@pytest.mark.parametrize("receipt", ["ABC. Call 0700000000 to confirm your PIN", "tk4ab12cde", "", None, "X" * 13])
def test_a_receipt_is_repeated_only_if_it_is_one(receipt) -> None:  # type: ignore[no-untyped-def]
    """A result's receipt field is free text: a forger's words never go out under our sender ID."""
    paid = compose("payout_paid", {"amount_cents": 60_000, "receipt": receipt}, "en")
    assert paid == "fleetpay: KES 600 sent to your M-Pesa."
    assert "PIN" not in compose("payment", {"amount_cents": 100, "receipt": receipt, "vehicle": "025",
                                            "contributed_cents": 0, "target_cents": 100, "share_cents": 0}, "sw")
