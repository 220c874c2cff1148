"""``money.result_matching``: a result settles a payout only when it matches what we asked."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from money.result_matching import Asked, Verdict, judge_b2c_result, judge_status_result, resend_or_review
from schemas.callbacks import B2CResult, TransactionStatusResult

ASKED = Asked(originator_conversation_id="fp_1", conversation_id="AG_1", amount_cents=5_000,
              msisdn="254722000444", short_code="4165253")
SUCCESS = B2CResult(originator_conversation_id="fp_1", conversation_id="AG_1", result_code=0, result_desc="ok",
                    receipt="SG1", amount_cents=5_000, completed_at=None, receiver="254722000444 - DRIVER")
COMPLETED = TransactionStatusResult(
    originator_conversation_id="ts_1", conversation_id="AG_9", result_code=0, result_desc="ok", receipt="SG1",
    amount_cents=5_000, transaction_status="Completed", original_originator_conversation_id="fp_1",
    debit_party="4165253 - FLEET", credit_party="254722000444 - DRIVER",
)
NOT_FOUND = ("R000001",)


def status(result: TransactionStatusResult, *, ours: bool = True) -> Verdict:
    return judge_status_result(result, ASKED, query_is_ours=ours, not_found_codes=NOT_FOUND)


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        (SUCCESS, Verdict("result_success")),
        (replace(SUCCESS, receiver="2547*****444 - D***"), Verdict("result_success")),  # masked: not compared
        (replace(SUCCESS, receiver=None), Verdict("mismatch", "receiver_missing")),
        (replace(SUCCESS, conversation_id=None), Verdict("mismatch", "conversation_id_differs")),
        (replace(SUCCESS, result_code=2001, amount_cents=None, receipt=None), Verdict("result_failure")),
        (replace(SUCCESS, result_code="SFC_IC0003"), Verdict("result_failure")),
        (replace(SUCCESS, amount_cents=None), Verdict("mismatch", "amount_missing")),
        (replace(SUCCESS, amount_cents=510_000), Verdict("mismatch", "amount_differs:510000")),
        (replace(SUCCESS, receiver="254799999999 - OTHER"), Verdict("mismatch", "receiver_differs")),
        (replace(SUCCESS, receiver="0799999999 - OTHER"), Verdict("mismatch", "receiver_differs")),
        (replace(SUCCESS, conversation_id="AG_other"), Verdict("mismatch", "conversation_id_differs")),
        (replace(SUCCESS, conversation_id="AG_other", result_code=1), Verdict("mismatch", "conversation_id_differs")),
    ],
)
def test_b2c_results(result: B2CResult, verdict: Verdict) -> None:
    assert judge_b2c_result(result, ASKED) == verdict


def test_a_result_before_daraja_gave_us_its_conversation_id_is_judged_on_the_rest() -> None:
    asked = replace(ASKED, conversation_id=None)
    assert judge_b2c_result(replace(SUCCESS, conversation_id="AG_any"), asked) == Verdict("result_success")


@pytest.mark.parametrize(
    ("result", "ours", "verdict"),
    [
        (COMPLETED, True, Verdict("status_paid")),
        (replace(COMPLETED, credit_party="2547*****444 - D***"), True, Verdict("status_paid")),
        (replace(COMPLETED, debit_party=None, credit_party=None), True, Verdict("status_paid")),
        (replace(COMPLETED, original_originator_conversation_id=None), True, Verdict("status_paid")),
        (COMPLETED, False, Verdict(None, "status_for_a_query_we_never_sent", review=True)),
        (replace(COMPLETED, transaction_status="Declined"), False, Verdict(None, "status_for_a_query_we_never_sent", review=True)),
        (replace(COMPLETED, original_originator_conversation_id="fp_2"), True, Verdict("mismatch", "status_names_another_payout")),
        (replace(COMPLETED, amount_cents=100), True, Verdict("mismatch", "amount_differs:100")),
        (replace(COMPLETED, amount_cents=None), True, Verdict("mismatch", "amount_missing")),
        (replace(COMPLETED, credit_party="254799999999 - OTHER"), True, Verdict("mismatch", "receiver_differs")),
        (replace(COMPLETED, credit_party="600100 - SOME SHOP"), True, Verdict("mismatch", "receiver_differs")),
        # a customer paying our paybill (C2B), not a payment from us
        (replace(COMPLETED, debit_party="254722000444 - DRIVER", credit_party="4165253 - FLEET"), True,
         Verdict("mismatch", "not_a_payment_from_our_shortcode")),
        (replace(COMPLETED, transaction_status="Declined"), True, Verdict("status_failed")),
        (replace(COMPLETED, transaction_status=" expired "), True, Verdict("status_failed")),
        (replace(COMPLETED, transaction_status="Cancelled"), True, Verdict("status_failed")),
        (replace(COMPLETED, result_code="R000001", transaction_status=None), True, Verdict("status_not_found")),
        (replace(COMPLETED, transaction_status="Pending Authorized"), True, Verdict(None, "status_undecided:0:pending authorized")),
        (replace(COMPLETED, result_code=2001, transaction_status=None), True, Verdict(None, "status_undecided:2001")),
        (replace(COMPLETED, transaction_status=None), True, Verdict(None, "status_undecided:0:-")),
    ],
)
def test_status_results(result: TransactionStatusResult, ours: bool, verdict: Verdict) -> None:
    assert status(result, ours=ours) == verdict


amounts = st.one_of(st.none(), st.integers(min_value=1, max_value=10**12))
parties = st.one_of(st.none(), st.sampled_from(["254722000444 - D", "254799999999 - X", "2547*****444 - D", "4165253 - F", ""]),
                    st.text(max_size=30))


@settings(max_examples=500)
@given(amounts, parties, st.one_of(st.none(), st.sampled_from(["AG_1", "AG_2"])))
def test_a_b2c_success_settles_only_what_we_asked(amount: int | None, receiver: str | None, conversation: str | None) -> None:
    verdict = judge_b2c_result(replace(SUCCESS, amount_cents=amount, receiver=receiver, conversation_id=conversation), ASKED)
    if verdict.event == "result_success":
        assert amount == ASKED.amount_cents
        assert conversation == ASKED.conversation_id
        assert receiver and not receiver.startswith(("254799999999", "4165253"))
    else:
        assert verdict.event == "mismatch" and verdict.reason


@settings(max_examples=1000)
@given(amounts, parties, parties, st.booleans(), st.sampled_from(["Completed", "Declined", "Initiated", ""]))
def test_a_status_answer_proves_payment_only_for_our_query_and_what_we_asked(
    amount: int | None, debit: str | None, credit: str | None, ours: bool, state: str
) -> None:
    verdict = status(replace(COMPLETED, amount_cents=amount, debit_party=debit, credit_party=credit,
                             transaction_status=state), ours=ours)
    if verdict.event in ("status_paid", "status_failed"):
        assert ours
    if verdict.event == "status_paid":
        assert amount == ASKED.amount_cents
        assert debit is None or not debit.startswith("254")
        assert credit is None or not credit.startswith(("254799999999", "4165253"))


@pytest.mark.parametrize(("sends", "expected"), [
    (1, Verdict("status_not_found")),
    (4, Verdict("status_not_found")),
    (5, Verdict("escalate", "not_found_after_5_sends")),
    (9, Verdict("escalate", "not_found_after_9_sends")),
])
def test_not_found_sends_a_payout_again_but_not_for_ever(sends: int, expected: Verdict) -> None:
    assert resend_or_review(Verdict("status_not_found"), sends=sends, sends_max=5) == expected


@pytest.mark.parametrize("verdict", [Verdict("status_paid"), Verdict("status_failed"), Verdict(None, "x"),
                                     Verdict("mismatch", "y")])
def test_only_not_found_is_capped(verdict: Verdict) -> None:
    assert resend_or_review(verdict, sends=50, sends_max=5) == verdict
