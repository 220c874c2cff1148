"""The drivers' USSD menu, as one pure function of what they typed and their numbers.

Africa's Talking posts the whole session's input each time, the choices joined by ``*`` (``""``
first, then ``"1"``, ``"1*0"``, ...); the answer starts ``CON`` (show this, wait for input) or
``END`` (show this, hang up). ``answer`` walks the choices from the main menu: ``0`` goes back,
anything unexpected goes back to the main menu saying so (never an error), and every screen fits
in 182 characters, the most one USSD screen shows.

    1. Today           today's target and what was paid towards it
    2. My money        payable now, and on its way to M-Pesa
    3. Last payouts    the last three, with their M-Pesa receipts
    4. Statement       the last 7 days, sent by SMS (1 to confirm)
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetpay.notice_texts import Language, day_month, is_receipt, kes

SCREEN_CHARS_MAX = 182
INPUT_STEPS_MAX = 30  # a session longer than this starts again at the main menu
BACK = "0"
STATEMENT = "4"


@dataclass(frozen=True)
class PayoutLine:
    amount_cents: int
    state: str
    receipt: str | None
    business_date: str  # ISO


@dataclass(frozen=True)
class DriverFacts:
    code: str
    language: Language
    business_date: str  # ISO
    target_cents: int
    contributed_cents: int
    payable_cents: int
    in_flight_cents: int
    payouts: tuple[PayoutLine, ...]  # newest first, at most three


@dataclass(frozen=True)
class Reply:
    text: str  # begins CON or END
    statement_requested: bool = False


_WORDS = {
    "en": {
        "menu": "1. Today\n2. My money\n3. Last payouts\n4. Statement by SMS",
        "invalid": "Invalid choice.",
        "back": "0. Back",
        "today": "Today {day}: paid {paid} of {target} target. {left} to go.",
        "met": "Today {day}: paid {paid}, target {target} met.",
        "money": "Payable now: {payable}\nOn its way to M-Pesa: {in_flight}",
        "no_payouts": "No payouts yet.",
        "paid": "paid", "open": "on its way", "failed": "not paid, back in payable", "review": "being checked",
        "confirm": "Send your statement for the last 7 days by SMS?\n1. Yes",
        "sent": "Your statement is on its way by SMS.",
        "sent_already": "Today's statement was sent already. Ask again tomorrow.",
    },
    "sw": {
        "menu": "1. Leo\n2. Pesa yangu\n3. Malipo ya mwisho\n4. Taarifa kwa SMS",
        "invalid": "Chaguo si sahihi.",
        "back": "0. Rudi",
        "today": "Leo {day}: umelipa {paid} kati ya lengo {target}. Bado {left}.",
        "met": "Leo {day}: umelipa {paid}, lengo {target} limefikiwa.",
        "money": "Unadai sasa: {payable}\nInatumwa M-Pesa: {in_flight}",
        "no_payouts": "Bado hakuna malipo.",
        "paid": "imelipwa", "open": "inatumwa", "failed": "haikulipwa, imerudi", "review": "inakaguliwa",
        "confirm": "Tuma taarifa ya siku 7 zilizopita kwa SMS?\n1. Ndiyo",
        "sent": "Taarifa yako inatumwa kwa SMS.",
        "sent_already": "Taarifa ya leo imeshatumwa. Uliza tena kesho.",
    },
}

UNKNOWN_NUMBER = Reply("END This number is not registered with fleetpay. Please call the office.\n"
                       "Nambari hii haijasajiliwa. Piga simu ofisini.")


def statement_sent_already(language: Language) -> Reply:
    """The end of a session that asked for a second statement the same day."""
    return Reply("END " + _WORDS[language]["sent_already"])


def _payout_state(state: str) -> str:
    if state in ("paid", "failed", "review"):
        return state
    return "open"


def _screen(choice: str, facts: DriverFacts) -> str:
    words = _WORDS[facts.language]
    if choice == "1":
        left = facts.target_cents - facts.contributed_cents
        template = words["met"] if left <= 0 else words["today"]
        return template.format(day=day_month(facts.business_date), paid=kes(facts.contributed_cents),
                               target=kes(facts.target_cents), left=kes(max(0, left)))
    if choice == "2":
        return words["money"].format(payable=kes(facts.payable_cents), in_flight=kes(facts.in_flight_cents))
    if choice == "3":
        if not facts.payouts:
            return words["no_payouts"]
        return "\n".join(
            f"{day_month(p.business_date)} {kes(p.amount_cents)} "
            + (p.receipt if p.state == "paid" and is_receipt(p.receipt) else words[_payout_state(p.state)])
            for p in facts.payouts[:3]
        )
    return words["confirm"]


def _con(*parts: str) -> Reply:
    return Reply("CON " + "\n".join(part for part in parts if part))


def answer(text: str, facts: DriverFacts | None) -> Reply:
    """The reply to a session whose input so far is ``text`` (``""`` on dialling)."""
    if facts is None:
        return UNKNOWN_NUMBER
    words = _WORDS[facts.language]
    main = f"fleetpay {facts.code}\n{words['menu']}"
    steps = [step.strip() for step in text.split("*")] if text.strip() else []
    if len(steps) > INPUT_STEPS_MAX:
        return _con(main)
    screen: str | None = None  # None: the main menu
    invalid = False
    for step in steps:
        invalid = False
        if screen is None:
            if step in ("1", "2", "3", STATEMENT):
                screen = step
            else:
                invalid = True
        elif step == BACK:
            screen = None
        elif screen == STATEMENT and step == "1":
            return Reply("END " + words["sent"], statement_requested=True)
        else:
            screen, invalid = None, True
    if screen is None:
        return _con(words["invalid"] if invalid else "", main)
    return _con(_screen(screen, facts), words["back"])
