"""Africa's Talking's send answer, read strictly: what it says of our number, and nothing more."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from schemas.africas_talking import parse_send_answer, verdict_of
from schemas.callbacks import InvalidCallback

# The answer of Africa's Talking's SMS documentation and its SDK's README.
DOCUMENTED = {"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000", "Recipients": [
    {"statusCode": 101, "number": "+254711XXXYYY", "status": "Success", "cost": "KES 0.8000",
     "messageId": "ATPid_SampleTxnId123"}]}}


def test_the_documented_answer() -> None:
    answer = parse_send_answer(DOCUMENTED, "+254711XXXYYY")
    assert (answer.verdict, answer.status, answer.message_id, answer.cost) == (
        "sent", "101 Success", "ATPid_SampleTxnId123", "KES 0.8000")
    assert parse_send_answer(DOCUMENTED, "254711XXXYYY").verdict == "sent"  # with or without the +


@pytest.mark.parametrize(("code", "verdict"), [
    (100, "sent"), (101, "sent"), (102, "sent"), (403, "refused"), (404, "refused"), (406, "refused"),
    (409, "refused"), (401, "not_sent"), (402, "not_sent"), (405, "not_sent"), (407, "not_sent"), (502, "not_sent"),
    (500, "unknown"), (501, "unknown"), (999, "unknown"),
])
def test_each_status_code(code: int, verdict: str) -> None:
    assert verdict_of(code) == verdict


def test_an_answer_without_our_number_says_nothing_sure_unless_it_names_nobody() -> None:
    other = {"SMSMessageData": {"Message": "Sent to 1/1", "Recipients": [{"statusCode": 101, "number": "+254799000000"}]}}
    assert parse_send_answer(other, "+254711000001").verdict == "unknown"
    refused = {"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}}
    assert parse_send_answer(refused, "+254711000001").verdict == "not_sent"
    failed = {"SMSMessageData": {"Recipients": [{"statusCode": 406, "number": "+254711000001", "messageId": "None"}]}}
    assert parse_send_answer(failed, "+254711000001").message_id is None


@given(body=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                         max_leaves=20))
def test_any_body_is_read_or_refused_by_name(body: object) -> None:
    for wrapped in (body, {"SMSMessageData": body}, {"SMSMessageData": {"Recipients": body}}):
        try:
            parse_send_answer(wrapped, "+254711000001")
        except InvalidCallback as error:
            assert error.reason.startswith(("missing_field:", "invalid_field:"))
