from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.callbacks import (
    B2CResult,
    C2BPayment,
    InvalidCallback,
    StkResult,
    TransactionStatusResult,
    external_id,
    parse_b2c_result,
    parse_balance_result,
    parse_c2b,
    parse_status_result,
    parse_stk,
)
from schemas.parsing import EAT
from tests.support import SAMPLES

# Every sample that Safaricom POSTs to one of our callback routes: (inbox kind, parser).
CALLBACK_SAMPLES: dict[str, tuple[str, Callable[[Any], object]]] = {
    "c2b_validation.json": ("c2b_validation", parse_c2b),
    "c2b_confirmation.json": ("c2b_confirmation", parse_c2b),
    "c2b_confirmation_driver_id_v1_hashed.json": ("c2b_confirmation", parse_c2b),
    "stk_callback_success.json": ("stk_result", parse_stk),
    "stk_callback_cancelled.json": ("stk_result", parse_stk),
    "b2c_result_success.json": ("b2c_result", parse_b2c_result),
    "b2c_result_failure.json": ("b2c_result", parse_b2c_result),
    "b2c_queue_timeout.json": ("b2c_timeout", parse_b2c_result),
    "transaction_status_result.json": ("status_result", parse_status_result),
    "account_balance_result.json": ("balance_result", parse_balance_result),
}
# Requests we send and synchronous answers we receive: not callbacks.
OTHER_SAMPLES = {
    "b2c_request.json",
    "b2c_response_accepted.json",
    "b2c_response_duplicate_error.json",
    "b2c_response_invalid_token.json",
    "oauth_token_response.json",
}


def load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(), parse_float=Decimal)


# --- the samples ------------------------------------------------------------------------------


def test_every_sample_is_classified() -> None:
    on_disk = {path.name for path in SAMPLES.glob("*.json")}
    assert on_disk == set(CALLBACK_SAMPLES) | OTHER_SAMPLES


@pytest.mark.parametrize("name", sorted(CALLBACK_SAMPLES))
def test_every_callback_sample_parses_and_has_an_external_id(name: str) -> None:
    kind, parse = CALLBACK_SAMPLES[name]
    body = load(name)
    assert parse(body) is not None
    assert external_id(kind, body)


def test_c2b_confirmation_sample() -> None:
    assert parse_c2b(load("c2b_confirmation.json")) == C2BPayment(
        trans_id="SHK3QX7T2M",
        trans_time=datetime(2024, 8, 15, 14, 30, 12, tzinfo=EAT),
        amount_cents=20_000,
        bill_ref="025",
        short_code="4165253",
        msisdn_raw="2547 ***** 149",
        first_name="JANE",
    )


def test_c2b_validation_and_hashed_samples() -> None:
    validation = parse_c2b(load("c2b_validation.json"))
    assert (validation.trans_id, validation.amount_cents, validation.bill_ref) == (
        "SHK3QX7T2N",
        15_000,
        "114",
    )
    hashed = parse_c2b(load("c2b_confirmation_driver_id_v1_hashed.json"))
    assert (hashed.bill_ref, hashed.amount_cents) == ("D112006", 100_000)
    assert len(hashed.msisdn_raw) == 64


def test_stk_success_sample() -> None:
    assert parse_stk(load("stk_callback_success.json")) == StkResult(
        checkout_request_id="ws_CO_191220191020363925",
        merchant_request_id="29115-34620561-1",
        result_code=0,
        result_desc="The service request is processed successfully.",
        receipt="NLJ7RT61SV",
        amount_cents=100,
        paid_at=datetime(2019, 12, 19, 10, 21, 15, tzinfo=EAT),
        phone="254708374149",
    )


def test_stk_cancelled_sample() -> None:
    result = parse_stk(load("stk_callback_cancelled.json"))
    assert (result.result_code, result.result_desc) == (1032, "Request cancelled by user")
    assert (result.receipt, result.amount_cents, result.paid_at, result.phone) == (None,) * 4


def test_b2c_success_sample() -> None:
    assert parse_b2c_result(load("b2c_result_success.json")) == B2CResult(
        originator_conversation_id="po_01J5Z7K2M9",
        conversation_id="AG_20240706_20106e9209f64bebd05b",
        result_code=0,
        result_desc="The service request is processed successfully.",
        receipt="SG632NMUAB",
        amount_cents=10_000,
        completed_at=datetime(2024, 7, 6, 22, 48, 52, tzinfo=EAT),
        receiver="254705912645 - NICHOLAS JOHN SONGOK",
    )


def test_b2c_failure_sample_has_no_receipt() -> None:
    result = parse_b2c_result(load("b2c_result_failure.json"))
    assert (result.originator_conversation_id, result.result_code) == ("po_01J5Z7K2MA", 2001)
    assert (result.receipt, result.amount_cents, result.completed_at) == (None, None, None)


def test_b2c_queue_timeout_sample() -> None:
    result = parse_b2c_result(load("b2c_queue_timeout.json"))
    assert (result.originator_conversation_id, result.result_code) == ("po_01J5Z7K2MB", 1)
    assert result.receipt is None


def test_transaction_status_sample() -> None:
    assert parse_status_result(load("transaction_status_result.json")) == TransactionStatusResult(
        originator_conversation_id="ts_01J5Z9Q4R2",
        conversation_id="AG_20240707_2010b7c1d2e3f4a5b6c7",
        result_code=0,
        result_desc="The service request is processed successfully.",
        receipt="SG632NMUAB",
        amount_cents=10_000,
        transaction_status="Completed",
        original_originator_conversation_id="po_01J5Z7K2M9",
        debit_party="4165253 - SUNNY FLEET",
        credit_party="254705912645 - NICHOLAS JOHN SONGOK",
    )


# --- C2B rejects ------------------------------------------------------------------------------

C2B = {
    "TransactionType": "Pay Bill",
    "TransID": "SHK3QX7T2M",
    "TransTime": "20240815143012",
    "TransAmount": "200.00",
    "BusinessShortCode": "4165253",
    "BillRefNumber": "025",
    "MSISDN": "2547 ***** 149",
    "FirstName": "JANE",
}


def c2b(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {**C2B, **changes}
    return {key: value for key, value in body.items() if value is not ...}


@pytest.mark.parametrize(
    ("body", "reason", "result_code"),
    [
        ([], "not_an_object", "C2B00016"),
        ("{}", "not_an_object", "C2B00016"),
        (None, "not_an_object", "C2B00016"),
        (c2b(TransID=...), "missing_field:TransID", "C2B00016"),
        (c2b(TransID=""), "missing_field:TransID", "C2B00016"),
        (c2b(TransID="SHK3-QX7T2M"), "invalid_field:TransID", "C2B00016"),
        (c2b(TransID="A" * 21), "invalid_field:TransID", "C2B00016"),
        (c2b(TransID=["SHK3QX7T2M"]), "invalid_field:TransID", "C2B00016"),
        (c2b(TransTime=...), "missing_field:TransTime", "C2B00016"),
        (c2b(TransTime=""), "missing_field:TransTime", "C2B00016"),
        (c2b(TransTime="20240230143012"), "time_invalid", "C2B00016"),
        (c2b(TransAmount=...), "missing_field:TransAmount", "C2B00013"),
        (c2b(TransAmount=""), "missing_field:TransAmount", "C2B00013"),
        (c2b(TransAmount="abc"), "amount_not_numeric", "C2B00013"),
        (c2b(TransAmount="-5.00"), "amount_negative", "C2B00013"),
        (c2b(TransAmount="0.00"), "amount_zero", "C2B00013"),
        (c2b(TransAmount="1.005"), "amount_too_many_decimals", "C2B00013"),
        (c2b(TransAmount="500000.01"), "amount_too_large", "C2B00013"),
        (c2b(TransAmount=200.0), "amount_float", "C2B00013"),
        (c2b(BillRefNumber=...), "missing_field:BillRefNumber", "C2B00012"),
        (c2b(BillRefNumber=""), "missing_field:BillRefNumber", "C2B00012"),
        (c2b(BillRefNumber="   "), "missing_field:BillRefNumber", "C2B00012"),
        (c2b(BillRefNumber=None), "missing_field:BillRefNumber", "C2B00012"),
        (c2b(FirstName={"a": 1}), "invalid_field:FirstName", "C2B00016"),
    ],
)
def test_parse_c2b_rejects(body: object, reason: str, result_code: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        parse_c2b(body)
    assert (caught.value.reason, caught.value.result_code) == (reason, result_code)


def test_parse_c2b_max_amount_is_a_parameter() -> None:
    with pytest.raises(InvalidCallback, match="amount_too_large"):
        parse_c2b(c2b(TransAmount="250000.01"), max_amount_cents=25_000_000)


def test_parse_c2b_optional_fields_may_be_missing_or_numbers() -> None:
    payment = parse_c2b(
        c2b(BusinessShortCode=4165253, MSISDN=..., FirstName=..., TransAmount=Decimal("5.00"))
    )
    assert (payment.short_code, payment.msisdn_raw, payment.first_name) == ("4165253", "", "")
    assert payment.amount_cents == 500


def test_parse_c2b_keeps_bill_ref_as_typed() -> None:
    assert parse_c2b(c2b(BillRefNumber=" d112 006")).bill_ref == " d112 006"


# --- STK --------------------------------------------------------------------------------------

STK_ITEMS = [
    {"Name": "Amount", "Value": Decimal("1.00")},
    {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
    {"Name": "Balance"},
    {"Name": "TransactionDate", "Value": 20191219102115},
    {"Name": "PhoneNumber", "Value": 254708374149},
]


def stk(items: object = STK_ITEMS, **changes: object) -> dict[str, object]:
    callback: dict[str, object] = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 0,
        "ResultDesc": "ok",
        "CallbackMetadata": {"Item": items},
        **changes,
    }
    return {"Body": {"stkCallback": {k: v for k, v in callback.items() if v is not ...}}}


def test_stk_items_are_looked_up_by_name() -> None:
    result = parse_stk(stk(list(reversed(STK_ITEMS))))
    assert (result.receipt, result.amount_cents) == ("NLJ7RT61SV", 100)
    assert result.phone == "254708374149"


@pytest.mark.parametrize("code", [0, "0", " 0 "])
def test_stk_result_code_is_normalised(code: object) -> None:
    assert parse_stk(stk(ResultCode=code)).result_code == 0


def test_stk_string_failure_code_and_text_codes() -> None:
    assert parse_stk(stk(ResultCode="1032", CallbackMetadata=...)).result_code == 1032
    assert parse_stk(stk(ResultCode="SFC_IC0003", CallbackMetadata=...)).result_code == "SFC_IC0003"


def test_stk_integer_amount_and_unusable_phone() -> None:
    items = [*STK_ITEMS[1:4], {"Name": "Amount", "Value": 1}, {"Name": "PhoneNumber", "Value": "x"}]
    result = parse_stk(stk(items))
    assert (result.amount_cents, result.phone) == (100, None)


def test_stk_failure_ignores_metadata() -> None:
    result = parse_stk(stk(ResultCode=1032))
    assert (result.receipt, result.amount_cents) == (None, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "missing_field:Body"),
        ({"Body": []}, "missing_field:Body"),
        ({"Body": {}}, "missing_field:stkCallback"),
        (stk(ResultCode=...), "missing_field:ResultCode"),
        (stk(ResultCode=True), "invalid_field:ResultCode"),
        (stk(ResultCode=Decimal("0")), "invalid_field:ResultCode"),
        (stk(ResultCode="9" * 5000), "invalid_field:ResultCode"),
        (stk(ResultCode="not a code"), "invalid_field:ResultCode"),
        (stk(ResultCode=""), "missing_field:ResultCode"),
        (stk(ResultCode="  "), "missing_field:ResultCode"),
        (stk(CheckoutRequestID=...), "missing_field:CheckoutRequestID"),
        (stk(CheckoutRequestID="has space"), "invalid_field:CheckoutRequestID"),
        (stk(MerchantRequestID=...), "missing_field:MerchantRequestID"),
        (stk(CallbackMetadata=...), "missing_field:CallbackMetadata"),
        (stk([]), "missing_field:MpesaReceiptNumber"),
        (stk(STK_ITEMS[1:]), "missing_field:Amount"),
        (stk([STK_ITEMS[0], *STK_ITEMS[2:]]), "missing_field:MpesaReceiptNumber"),
        (stk(STK_ITEMS[:3]), "missing_field:TransactionDate"),
        (stk([{"Name": "Amount", "Value": 1.0}, *STK_ITEMS[1:]]), "amount_float"),
        (stk([*STK_ITEMS[:3], {"Name": "TransactionDate", "Value": 1}]), "time_invalid"),
        (stk(["Amount"]), "invalid_field:Item"),
        (stk("Amount"), "invalid_field:Item"),
        (stk(CallbackMetadata={}), "missing_field:Item"),
        (stk(CallbackMetadata=[]), "invalid_field:CallbackMetadata"),
        (stk(CallbackMetadata="x"), "invalid_field:CallbackMetadata"),
    ],
)
def test_parse_stk_rejects(body: object, reason: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        parse_stk(body)
    assert caught.value.reason == reason


# --- B2C and Transaction Status ---------------------------------------------------------------

B2C_PARAMS = [
    {"Key": "TransactionAmount", "Value": 100},
    {"Key": "TransactionReceipt", "Value": "SG632NMUAB"},
    {"Key": "TransactionCompletedDateTime", "Value": "06.07.2024 22:48:52"},
]


def b2c(params: object = B2C_PARAMS, **changes: object) -> dict[str, object]:
    result: dict[str, object] = {
        "ResultType": 0,
        "ResultCode": 0,
        "ResultDesc": "ok",
        "OriginatorConversationID": "po_01J5Z7K2M9",
        "ConversationID": "AG_1",
        "TransactionID": "SG632NMUAB",
        "ResultParameters": {"ResultParameter": params},
        **changes,
    }
    return {"Result": {k: v for k, v in result.items() if v is not ...}}


def test_b2c_single_result_parameter_dict() -> None:
    result = parse_b2c_result(b2c({"Key": "TransactionAmount", "Value": Decimal("10.00")}))
    # no TransactionReceipt parameter: the top-level TransactionID is the receipt of a success
    assert (result.amount_cents, result.receipt, result.completed_at) == (1000, "SG632NMUAB", None)


def test_b2c_text_result_code_is_kept() -> None:
    result = parse_b2c_result(b2c(ResultCode="SFC_IC0003"))
    assert (result.result_code, result.receipt) == ("SFC_IC0003", None)


def test_b2c_failure_zero_filled_transaction_id_is_not_a_receipt() -> None:
    result = parse_b2c_result(b2c(ResultCode="2001", TransactionID="NLJ0000000"))
    assert (result.result_code, result.receipt) == (2001, None)


def test_b2c_conversation_id_is_optional() -> None:
    assert parse_b2c_result(b2c(ConversationID=...)).conversation_id is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "not_an_object"),
        ({}, "missing_field:Result"),
        (b2c(OriginatorConversationID=...), "missing_field:OriginatorConversationID"),
        (b2c(OriginatorConversationID="x" * 101), "invalid_field:OriginatorConversationID"),
        (b2c(ResultCode=...), "missing_field:ResultCode"),
        (b2c([], TransactionID=...), "missing_field:TransactionID"),
        (b2c([{"Key": "TransactionAmount", "Value": 10.0}]), "amount_float"),
        (b2c([{"Key": "TransactionCompletedDateTime", "Value": "2024-07-06"}]), "time_invalid"),
        (b2c([{"Value": 1}]), "invalid_field:ResultParameter"),
        (b2c(ResultParameters=[]), "invalid_field:ResultParameters"),
        (b2c(ResultParameters={}), "missing_field:ResultParameter"),
    ],
)
def test_parse_b2c_result_rejects(body: object, reason: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        parse_b2c_result(body)
    assert caught.value.reason == reason


def test_status_result_accepts_keys_with_spaces() -> None:
    params = [
        {"Key": "Receipt No", "Value": "SG632NMUAB"},
        {"Key": "Amount", "Value": "300"},
        {"Key": "Transaction Status", "Value": "Completed"},
        {"Key": "Originator Conversation ID", "Value": "po_01J5Z7K2M9"},
    ]
    result = parse_status_result(b2c(params, OriginatorConversationID="ts_1"))
    assert result.originator_conversation_id == "ts_1"
    assert result.original_originator_conversation_id == "po_01J5Z7K2M9"
    assert (result.receipt, result.amount_cents, result.transaction_status) == (
        "SG632NMUAB",
        30_000,
        "Completed",
    )


def test_status_result_failure_without_parameters() -> None:
    result = parse_status_result(b2c(ResultCode=1, ResultParameters=...))
    assert result.result_code == 1
    assert (result.receipt, result.amount_cents, result.transaction_status) == (None, None, None)
    assert result.original_originator_conversation_id is None


# --- external ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("c2b_validation", C2B, "SHK3QX7T2M"),
        ("c2b_confirmation", C2B, "SHK3QX7T2M"),
        ("stk_result", stk(), "ws_CO_191220191020363925"),
        ("b2c_result", b2c(), "po_01J5Z7K2M9"),
        ("b2c_timeout", b2c(), "timeout:po_01J5Z7K2M9"),
        ("status_result", b2c(), "po_01J5Z7K2M9"),
        ("status_timeout", b2c(), "timeout:po_01J5Z7K2M9"),
    ],
)
def test_external_id(kind: str, body: dict[str, object], expected: str) -> None:
    assert external_id(kind, body) == expected


@pytest.mark.parametrize(
    ("kind", "body", "reason"),
    [
        ("c2b_confirmation", [], "not_an_object"),
        ("c2b_confirmation", {}, "missing_field:TransID"),
        ("c2b_confirmation", c2b(TransID=""), "missing_field:TransID"),
        ("c2b_confirmation", c2b(TransID="SHK 3QX"), "invalid_field:TransID"),
        ("c2b_confirmation", c2b(TransID=12345), "invalid_field:TransID"),
        ("stk_result", {"Body": "x"}, "missing_field:CheckoutRequestID"),
        ("stk_result", stk(CheckoutRequestID=...), "missing_field:CheckoutRequestID"),
        ("b2c_result", {"Result": []}, "missing_field:OriginatorConversationID"),
        (
            "b2c_timeout",
            b2c(OriginatorConversationID="é"),
            "invalid_field:OriginatorConversationID",
        ),
        ("status_timeout", {}, "missing_field:OriginatorConversationID"),
    ],
)
def test_external_id_rejects(kind: str, body: object, reason: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        external_id(kind, body)
    assert caught.value.reason == reason


def test_external_id_unknown_kind_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="unknown callback kind") as caught:
        external_id("c2b", C2B)
    assert not isinstance(caught.value, InvalidCallback)


def test_parsing_does_not_mutate_the_body() -> None:
    body = stk()
    before = copy.deepcopy(body)
    parse_stk(body)
    external_id("stk_result", body)
    assert body == before
