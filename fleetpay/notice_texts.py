"""What a driver reads: the SMS of each notice, in English or Swahili, as pure functions.

A notice is a kind and its facts (integers in cents, short codes, ISO dates), written in the same
transaction as the money it describes (``money.notices``). The text is made from those facts when
the notice is first sent and kept, so a second attempt sends the very same words.

Every text is meant to fit one SMS segment (160 GSM-7 characters; each segment costs money):
amounts are whole shillings with thousands separators (``KES 1,250``; cents only when there are
some), dates are ``30/11``, and nothing a driver cannot act on is said. ``segments`` counts what the
text costs, by the GSM 03.38 rules (UCS-2 when any character is outside GSM-7).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Literal, get_args

Language = Literal["en", "sw"]
LANGUAGES: tuple[Language, ...] = get_args(Language)

NoticeKind = Literal[
    "payment", "payout_paid", "payout_delayed", "daily_summary", "termination_warning", "deposit_refund", "statement"
]
NOTICE_KINDS: tuple[NoticeKind, ...] = get_args(NoticeKind)
# A driver may opt out of these; the others concern money owed to them or their contract.
OPTIONAL_KINDS: frozenset[NoticeKind] = frozenset({"payment", "daily_summary"})

# GSM 03.38: the basic set (one septet each) and the extension table (two: escape + char).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")
SEGMENT_GSM_SINGLE, SEGMENT_GSM_PART = 160, 153
SEGMENT_UCS2_SINGLE, SEGMENT_UCS2_PART = 70, 67
SMS_SEGMENTS_MAX = 6  # a longer text is cut: nothing a driver needs runs to 900 characters


def gsm7_septets(text: str) -> int | None:
    """The septets ``text`` takes in GSM-7, or None when it needs UCS-2."""
    septets = 0
    for char in text:
        if char in _GSM_BASIC:
            septets += 1
        elif char in _GSM_EXTENDED:
            septets += 2
        else:
            return None
    return septets


def segments(text: str) -> int:
    """How many SMS segments ``text`` is sent as (what it costs)."""
    septets = gsm7_septets(text)
    if septets is not None:
        single, part, length = SEGMENT_GSM_SINGLE, SEGMENT_GSM_PART, septets
    else:
        single, part = SEGMENT_UCS2_SINGLE, SEGMENT_UCS2_PART
        length = sum(2 if ord(char) > 0xFFFF else 1 for char in text)  # UTF-16 code units
    if length <= single:
        return 1
    return -(-length // part)


_RECEIPT = re.compile(r"[A-Z0-9]{8,12}")


def is_receipt(text: str | None) -> bool:
    """An M-Pesa receipt (``TK4AB12CDE``): the only text from outside that a notice repeats. A
    result's receipt field is free text, and an SMS under our sender ID must not carry a forger's."""
    return bool(text) and _RECEIPT.fullmatch(text or "") is not None


def kes(amount_cents: int) -> str:
    """``KES 1,250`` (``KES 1,250.50`` when there are cents; ``-KES 300`` below zero)."""
    sign = "-" if amount_cents < 0 else ""
    shillings, cents = divmod(abs(amount_cents), 100)
    return f"{sign}KES {shillings:,}" + (f".{cents:02d}" if cents else "")


def day_month(iso_date: str) -> str:
    day = date.fromisoformat(iso_date)
    return f"{day.day:02d}/{day.month:02d}"


def _payment(f: Mapping[str, Any], sw: bool) -> str:
    where = (f" gari {f['vehicle']}" if sw else f" vehicle {f['vehicle']}") if f.get("vehicle") else ""
    receipt = f", {f['receipt']}" if is_receipt(f.get("receipt")) else ""
    left = max(0, f["target_cents"] - f["contributed_cents"])
    if sw:
        progress = (f"Lengo la leo limefikiwa ({kes(f['contributed_cents'])})." if left == 0
                    else f"Leo {kes(f['contributed_cents'])} kati ya {kes(f['target_cents'])}.")
        share = f" Sehemu yako {kes(f['share_cents'])}." if f.get("share_cents") else ""
        return f"fleetpay: {kes(f['amount_cents'])} imepokelewa{receipt}{where}. {progress}{share}"
    progress = (f"Today's target met ({kes(f['contributed_cents'])})." if left == 0
                else f"Today {kes(f['contributed_cents'])} of {kes(f['target_cents'])} target.")
    share = f" Your share {kes(f['share_cents'])}." if f.get("share_cents") else ""
    return f"fleetpay: {kes(f['amount_cents'])} received{receipt}{where}. {progress}{share}"


def _payout_paid(f: Mapping[str, Any], sw: bool) -> str:
    receipt = f["receipt"] if is_receipt(f.get("receipt")) else ""
    if sw:
        return f"fleetpay: {kes(f['amount_cents'])} zimetumwa kwa M-Pesa yako" + (f", risiti {receipt}." if receipt else ".")
    return f"fleetpay: {kes(f['amount_cents'])} sent to your M-Pesa" + (f", receipt {receipt}." if receipt else ".")


def _payout_delayed(f: Mapping[str, Any], sw: bool) -> str:
    if sw:
        return (f"fleetpay: malipo yako ya {kes(f['amount_cents'])} yamechelewa. Tunakagua na M-Pesa; "
                "pesa yako iko salama. Utapata SMS yakilipwa.")
    return (f"fleetpay: your payout of {kes(f['amount_cents'])} is delayed. We are checking with M-Pesa; "
            "your money is safe. You will get an SMS when it is paid.")


def _daily_summary(f: Mapping[str, Any], sw: bool) -> str:
    when = day_month(f["business_date"])
    misses = f"{f['misses']}/{f['misses_max']}"
    if sw:
        if f["met"]:
            return f"fleetpay {when}: umelipa {kes(f['contributed_cents'])}, lengo {kes(f['target_cents'])} limefikiwa. Asante!"
        carried = f" Upungufu {kes(f['carried_cents'])} unaongezwa kesho." if f["carried_cents"] else ""
        return (f"fleetpay {when}: umelipa {kes(f['contributed_cents'])} kati ya lengo {kes(f['target_cents'])}."
                f"{carried} Siku zilizokosa: {misses}.")
    if f["met"]:
        return f"fleetpay {when}: you paid {kes(f['contributed_cents'])}, target {kes(f['target_cents'])} met. Thank you!"
    carried = f" Shortfall {kes(f['carried_cents'])} added to tomorrow." if f["carried_cents"] else ""
    return (f"fleetpay {when}: you paid {kes(f['contributed_cents'])} of {kes(f['target_cents'])} target."
            f"{carried} Missed days: {misses}.")


def _termination_warning(f: Mapping[str, Any], sw: bool) -> str:
    if sw:
        return (f"fleetpay ONYO: umekosa lengo siku {f['misses']} mfululizo. Ukikosa kesho, mkataba wako "
                "utakatishwa. Piga simu ofisini kwa msaada.")
    return (f"fleetpay WARNING: you missed the target {f['misses']} days in a row. One more miss ends your "
            "contract. Call the office for help.")


def _deposit_refund(f: Mapping[str, Any], sw: bool) -> str:
    if sw:
        return (f"fleetpay: amana yako ya {kes(f['amount_cents'])} inarudishwa kwa M-Pesa yako. "
                "Utapata SMS ikilipwa.")
    return (f"fleetpay: your deposit of {kes(f['amount_cents'])} is being refunded to your M-Pesa. "
            "You will get an SMS when it is paid.")


def _statement(f: Mapping[str, Any], sw: bool) -> str:
    days = f["days"]  # [[iso date, contributed_cents, target_cents], ...] oldest first
    span = f"{day_month(days[0][0])}-{day_month(days[-1][0])}" if days else ""
    lines = " ".join(f"{day_month(d)} {c // 100:,}/{t // 100:,};" for d, c, t in days)
    if sw:
        return (f"fleetpay {span}: umelipa {kes(f['contributed_cents'])} kati ya {kes(f['target_cents'])}; "
                f"umepokea {kes(f['paid_out_cents'])} kwa M-Pesa. {lines}").rstrip(";")
    return (f"fleetpay {span}: you paid {kes(f['contributed_cents'])} of {kes(f['target_cents'])}; "
            f"received {kes(f['paid_out_cents'])} by M-Pesa. {lines}").rstrip(";")


_TEXTS: Mapping[NoticeKind, Callable[[Mapping[str, Any], bool], str]] = {
    "payment": _payment,
    "payout_paid": _payout_paid,
    "payout_delayed": _payout_delayed,
    "daily_summary": _daily_summary,
    "termination_warning": _termination_warning,
    "deposit_refund": _deposit_refund,
    "statement": _statement,
}


def compose(kind: NoticeKind, facts: Mapping[str, Any], language: Language) -> str:
    """The SMS text of a notice (never longer than ``SMS_SEGMENTS_MAX`` segments)."""
    text = _TEXTS[kind](facts, language == "sw")
    while segments(text) > SMS_SEGMENTS_MAX:
        text = text[: len(text) - 10].rstrip() + "..."
    return text
