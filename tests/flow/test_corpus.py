"""Real callback bodies that integrators published (tests/samples/corpus/, sources in its
SOURCES.md) are replayed over HTTP against the running ingest and workers, one test per body, and
each one's effect on the books is checked.

Every body is looked up by its own ids *and* its exact text, so a body whose id another test also
uses (results are keyed ``<OriginatorConversationID>#<digest>``, a second body for a known receipt
is kept as ``conflict``) cannot be mistaken for ours.

No published confirmation carried an account reference fleetpay can match (a vehicle code is
digits, a driver code ``D`` + 6 digits; payers typed ``A7``, ``m6``, ``Popie `` …): every real
confirmation goes to suspense, and one of them is then assigned to a driver by an operator, as
``fleetpay unmatched assign`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from db.balances import driver_balance
from db.models import Account, Entry, Inbox, Payout, Posting
from money.unmatched import assign_unmatched
from schemas.parsing import classify_account_ref
from tests.support import SAMPLES, add_driver_with_vehicle, next_driver_code, wait_until

CORPUS = SAMPLES / "corpus"
JSON_TYPE = {"content-type": "application/json"}
ACK = {"ResultCode": 0, "ResultDesc": "Success"}


# --- what each body is expected to do ------------------------------------------------------------


@dataclass(frozen=True)
class Unmatched:
    """A C2B confirmation whose account matches nobody: ``unmatched``, its money in suspense."""

    trans_id: str
    amount_cents: int
    account: str  # the reference as fleetpay normalises it (trimmed, upper-case, no spaces)


@dataclass(frozen=True)
class AssignedByOperator:
    """An unmatched confirmation an operator then assigns to a driver (paying the company)."""

    trans_id: str
    amount_cents: int
    account: str
    business_date: date


@dataclass(frozen=True)
class Validation:
    """A C2B validation request: answered at once, kept with the answer."""

    trans_id: str
    result_code: str


@dataclass(frozen=True)
class StkPaid:
    checkout_request_id: str
    receipt: str


@dataclass(frozen=True)
class StkFailed:
    checkout_request_id: str
    code: int


@dataclass(frozen=True)
class NotOurs:
    """A result about a payout or a status query fleetpay never made: stored, and refused."""

    kind: str  # b2c_result | b2c_timeout | status_result
    natural_id: str  # the OriginatorConversationID (``timeout:``-prefixed for a timeout)
    reason: str  # unknown_payout | unknown_query


@dataclass(frozen=True)
class Refused:
    """A body that cannot be applied: answered 400 and kept as ``rejected`` with the reason."""

    kind: str
    reason: str


Expectation = Unmatched | AssignedByOperator | Validation | StkPaid | StkFailed | NotOurs | Refused


@dataclass(frozen=True)
class Case:
    file: str
    route: str
    expect: Expectation
    copies: int = 1  # how many identical copies the published log holds: all are posted


CASES = [
    # C2B confirmations (v1 hashed, v2 masked, older full numbers): all unmatched.
    pytest.param(Case("c2b_v1_hashed_msisdn_sandbox_2025.json", "c2b/confirm",
                      Unmatched("TK60708BHZ", 100, "UM001")), id="c2b-v1-hashed-msisdn"),
    pytest.param(Case("c2b_v2_masked_first_name_only_2023.json", "c2b/confirm",
                      Unmatched("RAJ7PFM0SH", 100, "TEST")), id="c2b-v2-masked-first-name-only"),
    pytest.param(Case("c2b_v2_thirdparty_echo_account_a7_2023.json", "c2b/confirm",
                      Unmatched("RL261KZT4C", 250_000, "A7")), id="c2b-v2-third-party-id-echoed"),
    pytest.param(Case("c2b_v2_lowercase_account_2024.json", "c2b/confirm",
                      Unmatched("SA32XP6K7G", 2_000_000, "M6")), id="c2b-v2-lower-case-account"),
    pytest.param(Case("c2b_v2_account_trailing_space_2024.json", "c2b/confirm",
                      Unmatched("SAK4KK3O2U", 100, "POPIE")), id="c2b-v2-account-trailing-space"),
    pytest.param(Case("c2b_v2_masked_2541_number_2023.json", "c2b/confirm",
                      Unmatched("RLL6SYP0RW", 100, "AX")), id="c2b-v2-masked-2541-number"),
    pytest.param(Case("c2b_sandbox_star_masked_2022.json", "c2b/confirm",
                      Unmatched("QKL21LNLDS", 400, "TEST2")), id="c2b-sandbox-star-masked-names"),
    pytest.param(Case("c2b_sandbox_delivered_three_times_2019.json", "c2b/confirm",
                      Unmatched("NJN31HAOS3", 70_000, "TEST2"), copies=3), id="c2b-sandbox-delivered-3x"),
    pytest.param(Case("c2b_confirmation_empty_type_2017.json", "c2b/confirm",
                      Unmatched("LGR219G3EY", 1_000, "XYZ")), id="c2b-2017-empty-transaction-type"),
    pytest.param(Case("c2b_v2_newline_in_account_2024.json", "c2b/confirm",
                      Unmatched("SA5664XPWQ", 600_000, "M1")), id="c2b-v2-newline-in-account"),
    pytest.param(Case("c2b_v2_house_number_account_2023.json", "c2b/confirm",
                      AssignedByOperator("RL96PCL9IQ", 350_000, "A9", date(2023, 12, 9))),
                 id="c2b-v2-unmatched-then-assigned"),
    pytest.param(Case("c2b_validation_2017.json", "c2b/validate", Validation("LGR219G3EY", "C2B00012")),
                 id="c2b-2017-validation-unknown-account"),
    # STK push results: recorded, never posted.
    pytest.param(Case("stk_success_2025.json", "stk/result",
                      StkPaid("ws_CO_16112025183706196700000000", "TKG66ACNNQ")), id="stk-success-2025"),
    pytest.param(Case("stk_success_amount_decimal_2018.json", "stk/result",
                      StkPaid("ws_CO_24012018144725647", "MAO0DO9BYO")), id="stk-success-amount-1.00"),
    pytest.param(Case("stk_success_balance_value_zero_2025.json", "stk/result",
                      StkPaid("ws_CO_20092025115007849700000000", "TIK4Q812ZC")), id="stk-success-balance-value-0"),
    pytest.param(Case("stk_success_no_balance_item_2020.json", "stk/result",
                      StkPaid("ws_CO_030820201106269989", "OH32AH8NC2")), id="stk-success-no-balance-item"),
    pytest.param(Case("stk_cancelled_1032_2025.json", "stk/result",
                      StkFailed("ws_CO_16112025184607932700000000", 1032)), id="stk-cancelled-1032"),
    pytest.param(Case("stk_cancelled_1031_2020.json", "stk/result",
                      StkFailed("ws_CO_030820201129319111", 1031)), id="stk-cancelled-1031"),
    pytest.param(Case("stk_timeout_1037_ds_timeout_2020.json", "stk/result",
                      StkFailed("ws_CO_270120200051193012", 1037)), id="stk-timeout-1037-ds-timeout"),
    pytest.param(Case("stk_timeout_1037_no_response_2026.json", "stk/result",
                      StkFailed("ws_CO_20022026144008873700000000", 1037)), id="stk-timeout-1037-no-response"),
    pytest.param(Case("stk_debit_party_invalid_11_2026.json", "stk/result",
                      StkFailed("ws_CO_20022026003408055712345678", 11)), id="stk-debit-party-invalid-11"),
    pytest.param(Case("stk_empty_body_2025.json", "stk/result", Refused("stk_result", "missing_field:Body")),
                 id="stk-empty-body"),
    # B2C results and a queue timeout for payouts fleetpay never made.
    pytest.param(Case("b2c_success_production_2023.json", "b2c/result",
                      NotOurs("b2c_result", "119209-298361195-1", "unknown_payout")), id="b2c-success-production"),
    pytest.param(Case("b2c_success_local_number_receiver_2023.json", "b2c/result",
                      NotOurs("b2c_result", "15194-7136376-1", "unknown_payout")), id="b2c-success-07-receiver"),
    pytest.param(Case("b2c_success_sandbox_negative_charges_2020.json", "b2c/result",
                      NotOurs("b2c_result", "12714-7640233-1", "unknown_payout"), copies=2),
                 id="b2c-success-sandbox-delivered-2x"),
    pytest.param(Case("b2c_failure_2040_sandbox_2026.json", "b2c/result",
                      NotOurs("b2c_result", "bf47-4a79-a5e6-6bd68fe3b14e5682", "unknown_payout")),
                 id="b2c-failure-2040"),
    pytest.param(Case("b2c_failure_2001_receipt_like_id_2018.json", "b2c/result",
                      NotOurs("b2c_result", "11143-7569966-1", "unknown_payout")), id="b2c-failure-2001"),
    pytest.param(Case("b2c_failure_insufficient_balance_2023.json", "b2c/result",
                      NotOurs("b2c_result", "37389-104729544-1", "unknown_payout")), id="b2c-failure-1-insufficient"),
    # No queue-timeout body was found published; the result envelope is replayed at the timeout URL.
    pytest.param(Case("b2c_failure_2001_receipt_like_id_2018.json", "b2c/timeout",
                      NotOurs("b2c_timeout", "timeout:11143-7569966-1", "unknown_payout")),
                 id="b2c-envelope-at-queue-timeout-url"),
    # Transaction Status answers to queries fleetpay never sent.
    pytest.param(Case("status_completed_paybill_payment_2020.json", "status/result",
                      NotOurs("status_result", "29520-7776913-1", "unknown_query")), id="status-completed-c2b-payment"),
    pytest.param(Case("status_completed_b2c_salary_2017.json", "status/result",
                      NotOurs("status_result", "10816-694520-2", "unknown_query")), id="status-completed-b2c-payment"),
    pytest.param(Case("status_2032_receipt_not_found_2020.json", "status/result",
                      NotOurs("status_result", "28386-7760706-1", "unknown_query")), id="status-2032-not-found"),
    pytest.param(Case("status_2001_initiator_invalid_2018.json", "status/result",
                      NotOurs("status_result", "6618-1387084-1", "unknown_query")), id="status-2001"),
    # Account Balance results: fleetpay has no URL for them; one sent to the status URL by mistake.
    pytest.param(Case("account_balance_sandbox_2020.json", "status/result",
                      NotOurs("status_result", "9209-8162043-1", "unknown_query")), id="account-balance-at-status-url"),
    pytest.param(Case("account_balance_2001_single_parameter_2020.json", "status/result",
                      Refused("status_result", "missing_field:Result")), id="account-balance-without-envelope"),
]


# --- lookups ------------------------------------------------------------------------------------


def raw_body(case: Case) -> bytes:
    return (CORPUS / case.file).read_bytes()


def inbox_rows(sessions, kind: str, natural_id: str, raw: bytes) -> list[Inbox]:  # type: ignore[no-untyped-def]
    """The rows holding exactly this body under this id (results and conflicts add ``#<digest>``)."""
    with sessions() as session:
        return list(session.execute(
            select(Inbox).where(
                Inbox.kind == kind,
                (Inbox.external_id == natural_id) | Inbox.external_id.startswith(f"{natural_id}#", autoescape=True),
                Inbox.body == raw.decode("utf-8"),
            )
        ).scalars())


def the_row(sessions, kind: str, natural_id: str, raw: bytes) -> Inbox:  # type: ignore[no-untyped-def]
    rows = inbox_rows(sessions, kind, natural_id, raw)
    assert len(rows) == 1, f"{kind} {natural_id}: {len(rows)} rows hold this body"
    return rows[0]


def settled_row(sessions, kind: str, natural_id: str, raw: bytes) -> Inbox:  # type: ignore[no-untyped-def]
    wait_until(lambda: the_row(sessions, kind, natural_id, raw).status != "received", what=f"{kind} {natural_id}")
    return the_row(sessions, kind, natural_id, raw)


def posting_legs(sessions, key: str) -> tuple[list[Posting], dict[str, int]]:  # type: ignore[no-untyped-def]
    """The postings under ``key`` and, for the first, its entries summed by account kind."""
    with sessions() as session:
        postings = list(session.execute(select(Posting).where(Posting.idempotency_key == key)).scalars())
        legs: dict[str, int] = {}
        if postings:
            for kind, amount in session.execute(
                select(Account.kind, Entry.amount_cents)
                .join(Account, Account.id == Entry.account_id)
                .where(Entry.posting_id == postings[0].id)
            ):
                legs[kind] = legs.get(kind, 0) + amount
        return postings, legs


def postings_of_row(sessions, inbox_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return list(session.execute(select(Posting.idempotency_key).where(Posting.inbox_id == inbox_id)).scalars())


def post_copies(http, case: Case) -> list[Any]:  # type: ignore[no-untyped-def]
    raw = raw_body(case)
    return [http.post(case.route, content=raw, headers=JSON_TYPE) for _ in range(case.copies)]


# --- the checks, one per expectation --------------------------------------------------------------


def check_unmatched(  # type: ignore[no-untyped-def]
    http, sessions, case: Case, expect: Unmatched | AssignedByOperator
) -> Inbox:
    raw = raw_body(case)
    # strict=False: one real body holds a raw newline in a string, as Safaricom sent it.
    ref = classify_account_ref(json.loads(raw, strict=False)["BillRefNumber"])
    assert (ref.kind, ref.code) == ("unknown", expect.account)
    for response in post_copies(http, case):
        assert (response.status_code, response.json()) == (200, ACK), response.text
    row = settled_row(sessions, "c2b_confirmation", expect.trans_id, raw)
    assert (row.external_id, row.status, row.reason) == (expect.trans_id, "unmatched", None)
    # Every copy was the same body: one row, one posting, the money in suspense once.
    assert len(inbox_rows(sessions, "c2b_confirmation", expect.trans_id, raw)) == 1
    postings, legs = posting_legs(sessions, f"c2b:{expect.trans_id}")
    assert [(p.kind, p.inbox_id, p.driver_id) for p in postings] == [("unmatched", row.id, None)]
    assert legs == {"mpesa": -expect.amount_cents, "suspense": expect.amount_cents}
    return row


def check_assigned(http, sessions, settings, case: Case, expect: AssignedByOperator) -> None:  # type: ignore[no-untyped-def]
    row = check_unmatched(http, sessions, case, expect)
    driver_code = next_driver_code()
    with sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code=driver_code)
    with sessions.begin() as session:
        applied = assign_unmatched(
            session, trans_id=expect.trans_id, driver_code=driver_code, reason="typed a house number",
            operator="corpus-test", settings=settings, as_="company",
        )
    assert applied.status == "processed" and not applied.payout_ids
    assigned = the_row(sessions, "c2b_confirmation", expect.trans_id, raw_body(case))
    assert (assigned.id, assigned.status) == (row.id, "processed")
    assert assigned.reason == f"assigned:{driver_code}:corpus-test:typed a house number"
    postings, legs = posting_legs(sessions, f"assign:{expect.trans_id}")
    assert [(p.kind, p.inbox_id) for p in postings] == [("driver_payment", row.id)]
    assert legs.pop("suspense") == -expect.amount_cents  # suspense is emptied of it …
    assert sum(legs.values()) == expect.amount_cents and set(legs) <= {"target", "deposit"}  # … into the driver's
    with sessions() as session:
        balance = driver_balance(session, driver_code, expect.business_date, settings)
    assert balance["contributed_cents"] + balance["deposit_cents"] == expect.amount_cents


def check_validation(http, sessions, case: Case, expect: Validation) -> None:  # type: ignore[no-untyped-def]
    raw = raw_body(case)
    response = http.post(case.route, content=raw, headers=JSON_TYPE)
    assert (response.status_code, response.json()) == (200, {"ResultCode": expect.result_code, "ResultDesc": "Rejected"})
    row = the_row(sessions, "c2b_validation", expect.trans_id, raw)
    assert (row.status, row.reason) == ("rejected", f"validation:{expect.result_code}")
    assert postings_of_row(sessions, row.id) == []


def check_stk(http, sessions, case: Case, expect: StkPaid | StkFailed) -> None:  # type: ignore[no-untyped-def]
    raw = raw_body(case)
    for response in post_copies(http, case):
        assert (response.status_code, response.json()) == (200, ACK), response.text
    row = settled_row(sessions, "stk_result", expect.checkout_request_id, raw)
    if isinstance(expect, StkPaid):
        assert (row.status, row.reason) == ("processed", f"stk_paid:{expect.receipt}:applied_by_c2b_confirmation")
        # Its money is posted by the paybill's C2B confirmation of the same receipt, never by the result.
        assert posting_legs(sessions, f"c2b:{expect.receipt}")[0] == []
    else:
        assert (row.status, row.reason) == ("processed", f"stk_failed:{expect.code}")
    assert postings_of_row(sessions, row.id) == []


def check_not_ours(http, sessions, case: Case, expect: NotOurs) -> None:  # type: ignore[no-untyped-def]
    raw = raw_body(case)
    for response in post_copies(http, case):
        assert (response.status_code, response.json()) == (200, ACK), response.text
    row = settled_row(sessions, expect.kind, expect.natural_id, raw)
    assert row.external_id.startswith(f"{expect.natural_id}#")  # results are keyed by id and digest
    assert (row.status, row.reason) == ("rejected", expect.reason)
    assert postings_of_row(sessions, row.id) == []
    with sessions() as session:
        named = expect.natural_id.removeprefix("timeout:")
        assert session.execute(select(Payout.id).where(Payout.originator_conversation_id == named)).first() is None


def check_refused(http, sessions, case: Case, expect: Refused) -> None:  # type: ignore[no-untyped-def]
    raw = raw_body(case)
    response = http.post(case.route, content=raw, headers=JSON_TYPE)
    assert (response.status_code, response.json()) == (400, {"ResultCode": 1, "ResultDesc": f"Rejected: {expect.reason}"})
    with sessions() as session:
        rows = session.execute(
            select(Inbox.status, Inbox.reason).where(Inbox.kind == expect.kind, Inbox.body == raw.decode("utf-8"))
        ).all()
    assert [tuple(r) for r in rows] == [("rejected", expect.reason)]


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_corpus_body(case: Case, http, worker, sessions, settings) -> None:  # type: ignore[no-untyped-def]
    expect = case.expect
    if isinstance(expect, AssignedByOperator):
        check_assigned(http, sessions, settings, case, expect)
    elif isinstance(expect, Unmatched):
        check_unmatched(http, sessions, case, expect)
    elif isinstance(expect, Validation):
        check_validation(http, sessions, case, expect)
    elif isinstance(expect, StkPaid | StkFailed):
        check_stk(http, sessions, case, expect)
    elif isinstance(expect, NotOurs):
        check_not_ours(http, sessions, case, expect)
    else:
        check_refused(http, sessions, case, expect)


def test_every_corpus_file_is_replayed_and_sourced() -> None:
    on_disk = {path.name for path in CORPUS.glob("*.json")}
    replayed = {param.values[0].file for param in CASES}
    assert on_disk == replayed
    sources = (CORPUS / "SOURCES.md").read_text()
    assert all(f"`{name}`" in sources for name in on_disk), sorted(n for n in on_disk if f"`{n}`" not in sources)


def test_no_two_corpus_bodies_share_an_id() -> None:
    """A second, different body under a known id would be kept as ``conflict`` and never applied:
    the corpus has none, apart from a validation and a confirmation of the same payment (two kinds)."""
    seen: dict[tuple[str, str], str] = {}
    for param in CASES:
        case: Case = param.values[0]
        expect = case.expect
        natural = getattr(expect, "trans_id", None) or getattr(expect, "checkout_request_id", None) \
            or getattr(expect, "natural_id", None) or case.file
        key = (case.route, natural)
        assert seen.setdefault(key, case.file) == case.file, f"{key} is in {seen[key]} and {case.file}"
