"""``schemas.money_requests``: what the /admin API accepts as a money request, field by field;
anything else is ``InvalidRequest`` (a 400), never another error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from money.requests import KINDS, STAGED
from schemas.money_requests import FIELDS, InvalidRequest, parse_money_request

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                    max_leaves=10)


def test_every_kind_the_money_layer_runs_is_parsed_and_no_other() -> None:
    assert set(FIELDS) == set(KINDS) | set(STAGED)


@pytest.mark.parametrize(("body", "kind", "params"), [
    ({"kind": "unmatched_assign", "params": {"trans_id": " SHK3QX7T2M ", "driver": "d112006"}, "reason": "typo"},
     "unmatched_assign", {"trans_id": "SHK3QX7T2M", "driver": "D112006"}),
    ({"kind": "deposit_refund", "params": {"driver": "D112006", "amount_cents": None}, "reason": "leaving"},
     "deposit_refund", {"driver": "D112006", "amount_cents": None}),
    ({"kind": "payout_retry", "params": {"payout_id": 7}, "reason": "unpaid"}, "payout_retry", {"payout_id": 7}),
    ({"kind": "close_undo", "params": {"date": "2026-11-20"}, "reason": "early"}, "close_undo", {"date": "2026-11-20"}),
    ({"kind": "reconcile_fix", "reason": "manual SQL"}, "reconcile_fix", {}),
])
def test_a_request_as_a_script_sends_it(body: dict, kind: str, params: dict) -> None:  # type: ignore[type-arg]
    asked = parse_money_request(body)
    assert (asked.kind, asked.params, asked.reason) == (kind, params, body["reason"].strip())


@pytest.mark.parametrize(("body", "said"), [
    ([], "JSON object"),
    ({"kind": "drop_table", "reason": "x"}, "kind is one of"),
    ({"kind": "payout_retry", "params": {"payout_id": True}, "reason": "x"}, "payout_id is a whole number"),
    ({"kind": "payout_retry", "params": {"payout_id": 10**30}, "reason": "x"}, "payout_id is a whole number"),
    ({"kind": "payout_retry", "params": {"payout_id": "7"}, "reason": "x"}, "payout_id is a whole number"),
    ({"kind": "payout_retry", "params": {}, "reason": "x"}, "needs params ['payout_id']"),
    ({"kind": "payout_retry", "params": {"payout_id": 7, "amount_cents": 1}, "reason": "x"}, "unknown params"),
    ({"kind": "deposit_refund", "params": {"driver": "D1", "amount_cents": 1.5}, "reason": "x"}, "whole number of cents"),
    ({"kind": "deposit_refund", "params": {"driver": "D1", "amount_cents": -100}, "reason": "x"}, "whole number of cents"),
    ({"kind": "close_undo", "params": {"date": "2026-02-30"}, "reason": "x"}, "date YYYY-MM-DD"),
    ({"kind": "close_undo", "params": {"date": "20261120"}, "reason": "x"}, "date YYYY-MM-DD"),
    ({"kind": "unmatched_assign", "params": {"trans_id": "X\x00", "driver": "D1"}, "reason": "x"}, "trans_id"),
    ({"kind": "unmatched_assign", "params": {"trans_id": "X", "driver": "D1", "as": "bonus"}, "reason": "x"}, "fare or company"),
    ({"kind": "reconcile_fix", "reason": " "}, "reason says why"),
    ({"kind": "reconcile_fix", "reason": "x" * 501}, "reason says why"),
    ({"kind": "reconcile_fix", "reason": "x", "extra": 1}, "unknown fields"),
])
def test_a_bad_request_says_which_field(body: object, said: str) -> None:
    with pytest.raises(InvalidRequest, match=said.replace("[", r"\[").replace("]", r"\]")):
        parse_money_request(body)


@given(st.sampled_from(sorted(FIELDS)), JSON, JSON)
def test_no_input_raises_anything_but_invalid_request(kind: str, params: object, reason: object) -> None:
    try:
        asked = parse_money_request({"kind": kind, "params": params, "reason": reason})
    except InvalidRequest:
        return
    assert asked.kind == kind and isinstance(asked.params, dict) and asked.reason
