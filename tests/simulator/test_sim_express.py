"""M-Pesa Express (STK push and STK query): shapes, the paybill's C2B confirmation, refusals, faults."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from sim_harness import Daraja, load_sample, wait_until

from simulator import SimulatorConfig

STK = "stk/result"
CONFIRM = "c2b/confirm"
QUERY = "/mpesa/stkpushquery/v1/query"


def _callback(daraja: Daraja, checkout_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for received in daraja.received(STK):
            if received.body["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id:
                return received.body["Body"]["stkCallback"]
        return None

    found: dict[str, Any] = wait_until(find)
    return found


def _items(callback: dict[str, Any]) -> dict[str, Any]:
    return {item["Name"]: item.get("Value", "<absent>") for item in callback["CallbackMetadata"]["Item"]}


def _recorded(daraja: Daraja, kind: str) -> list[dict[str, Any]]:
    attempts: list[dict[str, Any]] = daraja.http.get(
        "/sim/callbacks", params={"kind": kind}).json()["callbacks"]
    return attempts


def _settled(daraja: Daraja, checkout_id: str) -> dict[str, Any]:
    """Wait until the push's result can be queried, and return the query's answer."""
    def answer() -> dict[str, Any] | None:
        response = daraja.stk_query(checkout_id)
        return response.json() if response.status_code == 200 else None

    settled: dict[str, Any] = wait_until(answer)
    return settled


# --- the happy path ---------------------------------------------------------------------------
def test_push_answer_callback_and_paybill_confirmation_match_the_samples(daraja: Daraja) -> None:
    daraja.register_urls()
    body, response = daraja.stk_push(Amount=150, AccountReference="025")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer) == ["MerchantRequestID", "CheckoutRequestID", "ResponseCode",
                            "ResponseDescription", "CustomerMessage"]
    assert answer["ResponseCode"] == "0"
    assert answer["CustomerMessage"] == "Success. Request accepted for processing"
    assert re.fullmatch(r"ws_CO_\d{14}\d{3}708374149", answer["CheckoutRequestID"])

    callback = _callback(daraja, answer["CheckoutRequestID"])
    sample = load_sample("stk_callback_success.json")["Body"]["stkCallback"]
    assert list(callback) == list(sample)
    assert [i["Name"] for i in callback["CallbackMetadata"]["Item"]] == \
        [i["Name"] for i in sample["CallbackMetadata"]["Item"]]
    assert callback["MerchantRequestID"] == answer["MerchantRequestID"]
    assert callback["ResultCode"] == 0 and callback["ResultDesc"] == sample["ResultDesc"]
    items = _items(callback)
    assert items["Amount"] == 150
    assert items["Balance"] == "<absent>"  # a Name without a Value, as in the sample
    assert isinstance(items["TransactionDate"], int) and re.fullmatch(r"20\d{12}", str(items["TransactionDate"]))
    assert items["PhoneNumber"] == 254708374149  # a JSON number
    receipt = items["MpesaReceiptNumber"]
    assert re.fullmatch(r"[A-Z0-9]{10}", receipt)

    # A paybill push also raises the C2B confirmation of the same receipt.
    confirmation = daraja.wait_for(CONFIRM)[0].body
    assert list(confirmation) == list(load_sample("c2b_confirmation.json"))
    assert confirmation["TransID"] == receipt
    assert confirmation["BillRefNumber"] == body["AccountReference"]
    assert confirmation["TransAmount"] == "150.00"
    assert confirmation["TransactionType"] == "Pay Bill"
    assert confirmation["MSISDN"] == "2547 ***** 149"  # still masked in C2B
    assert confirmation["OrgAccountBalance"] == "1000150.00"
    assert daraja.http.get("/sim/balances").json()["utility"] == "1000150.00"

    stk = daraja.http.get("/sim/stk").json()["requests"]
    assert [(r["checkout_request_id"], r["status"], r["receipt"]) for r in stk] == \
        [(answer["CheckoutRequestID"], "completed", receipt)]


def test_query_says_processing_then_the_result_as_a_string(make_daraja) -> None:
    daraja = make_daraja(result_delay_ms=400)
    _, response = daraja.stk_push()
    checkout_id = response.json()["CheckoutRequestID"]
    early = daraja.stk_query(checkout_id)
    assert early.status_code == 500
    assert early.json()["errorCode"] == "500.001.1001"
    assert early.json()["errorMessage"] == "The transaction is being processed"
    assert set(early.json()) == {"requestId", "errorCode", "errorMessage"}

    daraja.wait_for(STK)
    result = daraja.stk_query(checkout_id)
    assert result.status_code == 200
    assert list(result.json()) == ["ResponseCode", "ResponseDescription", "MerchantRequestID",
                                   "CheckoutRequestID", "ResultCode", "ResultDesc"]
    assert result.json()["ResponseCode"] == "0"
    assert result.json()["ResultCode"] == "0"  # a string in the query, a number in the callback
    assert result.json()["CheckoutRequestID"] == checkout_id
    assert result.json()["MerchantRequestID"] == response.json()["MerchantRequestID"]


def test_buy_goods_pays_but_raises_no_confirmation(daraja: Daraja) -> None:
    daraja.register_urls()
    _, response = daraja.stk_push(TransactionType="CustomerBuyGoodsOnline", PartyB="174379",
                                  Amount=40)
    checkout_id = response.json()["CheckoutRequestID"]
    assert _callback(daraja, checkout_id)["ResultCode"] == 0
    payments = daraja.http.get("/sim/c2b").json()["payments"]
    assert [(p["transaction_type"], p["status"], p["bill_ref_number"]) for p in payments] == \
        [("Buy Goods", "completed", "")]
    assert _recorded(daraja, "c2b_confirmation") == []


def test_without_registered_urls_only_the_stk_callback_is_sent(daraja: Daraja) -> None:
    _, response = daraja.stk_push()
    _callback(daraja, response.json()["CheckoutRequestID"])
    assert _recorded(daraja, "c2b_confirmation") == []
    assert [p["status"] for p in daraja.http.get("/sim/c2b").json()["payments"]] == ["completed"]


def test_v1_registration_hashes_the_confirmation_msisdn_but_not_the_stk_phone(daraja: Daraja) -> None:
    daraja.register_urls(version="v1")
    _, response = daraja.stk_push()
    items = _items(_callback(daraja, response.json()["CheckoutRequestID"]))
    assert items["PhoneNumber"] == 254708374149
    assert re.fullmatch(r"[0-9a-f]{64}", daraja.wait_for(CONFIRM)[0].body["MSISDN"])


def test_status_of_an_stk_receipt_shows_the_full_msisdn(daraja: Daraja) -> None:
    _, response = daraja.stk_push(Amount=75)
    receipt = _items(_callback(daraja, response.json()["CheckoutRequestID"]))["MpesaReceiptNumber"]
    daraja.transaction_status(TransactionID=receipt)
    result = daraja.wait_for("status/result")[0].body["Result"]
    params = {p["Key"]: p["Value"] for p in result["ResultParameters"]["ResultParameter"]}
    assert params["ReceiptNo"] == receipt and params["Amount"] == "75"
    assert params["DebitPartyName"].startswith("254708374149 - ")


# --- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("BusinessShortCode", "abc"), ("Timestamp", "2024"), ("Timestamp", "20241399000000"),
    ("TransactionType", "CustomerPayBill"), ("Amount", 0), ("Amount", "1.5"), ("Amount", "one"),
    ("PartyA", "0708374149"), ("PartyB", "shop"), ("PhoneNumber", "254808374149"),
    ("CallBackURL", "not a url"), ("AccountReference", "A" * 13), ("AccountReference", None),
    ("TransactionDesc", "D" * 14), ("Password", None),
])
def test_malformed_push_gets_400_002_02(daraja: Daraja, field: str, value: Any) -> None:
    body = daraja.stk_body()
    if value is None:
        del body[field]
    else:
        body[field] = value
    response = daraja.post("/mpesa/stkpush/v1/processrequest", body)
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "400.002.02"
    assert response.json()["errorMessage"] == f"Bad Request - Invalid {field}"
    assert daraja.http.get("/sim/stk").json()["requests"] == []


def test_transaction_desc_is_optional(daraja: Daraja) -> None:
    body = daraja.stk_body()
    del body["TransactionDesc"]
    assert daraja.post("/mpesa/stkpush/v1/processrequest", body).status_code == 200


def test_wrong_password_and_unknown_merchant(daraja: Daraja) -> None:
    timestamp = daraja.stk_body()["Timestamp"]
    wrong_passkey = daraja.stk_password(timestamp, passkey="not-the-passkey")
    _, refused = daraja.stk_push(Password=wrong_passkey)
    assert refused.status_code == 500
    assert (refused.json()["errorCode"], refused.json()["errorMessage"]) == \
        ("500.001.1001", "Wrong credentials")
    # The password must be built from the same Timestamp the body carries.
    _, stale = daraja.stk_push(Password=daraja.stk_password("20240101000000"))
    assert stale.json()["errorMessage"] == "Wrong credentials"
    _, other = daraja.stk_push(BusinessShortCode="174379",
                               Password=daraja.stk_password(timestamp, short_code="174379"))
    assert (other.status_code, other.json()["errorMessage"]) == (500, "Merchant does not exist")
    assert daraja.http.get("/sim/stk").json()["requests"] == []


def test_passkey_defaults_to_the_sandbox_one_and_is_configurable(make_daraja) -> None:
    sandbox = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
    assert SimulatorConfig().passkey == sandbox
    daraja = make_daraja(passkey="our-own-passkey")
    timestamp = daraja.stk_body()["Timestamp"]
    _, with_sandbox = daraja.stk_push(Password=daraja.stk_password(timestamp, passkey=sandbox))
    assert with_sandbox.json()["errorMessage"] == "Wrong credentials"
    _, ours = daraja.stk_push()
    assert ours.status_code == 200


@pytest.mark.parametrize(("overrides", "code", "desc"), [
    ({"Amount": 250_001}, 3, "Declined due to limit rule: greater than the maximum transaction amount."),
    ({"PartyB": "600000"}, 2028, "The request is not permitted according to product assignment."),
    ({"PhoneNumber": "254700000001", "PartyA": "254700000001"}, 1037, "DS timeout user cannot be reached"),
])
def test_pushes_m_pesa_would_fail_end_in_the_callback(make_daraja, overrides: dict[str, Any],
                                                      code: int, desc: str) -> None:
    daraja = make_daraja(unregistered_msisdns=frozenset({"254700000001"}))
    _, response = daraja.stk_push(**overrides)
    assert response.status_code == 200
    callback = _callback(daraja, response.json()["CheckoutRequestID"])
    assert (callback["ResultCode"], callback["ResultDesc"]) == (code, desc)
    assert "CallbackMetadata" not in callback
    assert daraja.http.get("/sim/c2b").json()["payments"] == []


def test_query_refusals(daraja: Daraja) -> None:
    unknown = daraja.stk_query("ws_CO_010120240000000000000000")
    assert (unknown.status_code, unknown.json()["errorCode"]) == (400, "400.002.02")
    assert unknown.json()["errorMessage"] == "Bad Request - Invalid CheckoutRequestID"
    _, response = daraja.stk_push()
    checkout_id = response.json()["CheckoutRequestID"]
    wrong = daraja.stk_query(checkout_id, Password="bm9wZQ==")
    assert (wrong.status_code, wrong.json()["errorMessage"]) == (500, "Wrong credentials")
    missing = daraja.post(QUERY, daraja.stk_credentials())
    assert missing.json()["errorMessage"] == "Bad Request - Invalid CheckoutRequestID"


# --- faults -----------------------------------------------------------------------------------
def test_result_failure_defaults_to_cancelled_and_pays_nothing(daraja: Daraja) -> None:
    daraja.register_urls()
    daraja.faults({"mode": "result_failure", "api": "express"})
    _, response = daraja.stk_push()
    checkout_id = response.json()["CheckoutRequestID"]
    callback = _callback(daraja, checkout_id)
    sample = load_sample("stk_callback_cancelled.json")["Body"]["stkCallback"]
    assert list(callback) == list(sample)
    assert (callback["ResultCode"], callback["ResultDesc"]) == (1032, "Request cancelled by user")
    assert _settled(daraja, checkout_id)["ResultCode"] == "1032"
    assert daraja.http.get("/sim/c2b").json()["payments"] == []
    assert _recorded(daraja, "c2b_confirmation") == []
    assert daraja.http.get("/sim/balances").json()["utility"] == "1000000.00"
    assert daraja.http.get("/sim/stk").json()["requests"][0]["status"] == "failed"


@pytest.mark.parametrize(("code", "desc"), [(1037, "DS timeout user cannot be reached"),
                                            (2001, "The initiator information is invalid."),
                                            ("SFC_IC0003", "The operator does not exist.")])
def test_result_failure_codes(daraja: Daraja, code: int | str, desc: str) -> None:
    daraja.faults({"mode": "result_failure", "api": "express", "result_code": code})
    _, response = daraja.stk_push()
    callback = _callback(daraja, response.json()["CheckoutRequestID"])
    assert (callback["ResultCode"], callback["ResultDesc"]) == (code, desc)


def test_drop_callback_still_pays_confirms_and_answers_the_query(daraja: Daraja) -> None:
    daraja.register_urls()
    daraja.faults({"mode": "drop_callback", "api": "express"})
    _, response = daraja.stk_push()
    checkout_id = response.json()["CheckoutRequestID"]
    confirmation = daraja.wait_for(CONFIRM)[0].body
    dropped = wait_until(lambda: _recorded(daraja, "stk_result"))
    assert dropped[0]["dropped"] is True and dropped[0]["ref"] == checkout_id
    assert daraja.received(STK) == []
    assert _settled(daraja, checkout_id)["ResultCode"] == "0"
    assert daraja.http.get("/sim/stk").json()["requests"][0]["receipt"] == confirmation["TransID"]


def test_the_paybill_confirmation_takes_c2b_faults(daraja: Daraja) -> None:
    daraja.register_urls()
    daraja.faults({"mode": "drop_callback", "api": "c2b"})
    _, response = daraja.stk_push()
    _callback(daraja, response.json()["CheckoutRequestID"])
    assert wait_until(lambda: _recorded(daraja, "c2b_confirmation"))[0]["dropped"] is True
    assert daraja.received(CONFIRM) == []


def test_slow_and_duplicate_stk_callbacks(daraja: Daraja) -> None:
    daraja.faults({"mode": "slow_callback", "api": "express", "delay_ms": 600})
    started = time.monotonic()
    _, slow = daraja.stk_push()
    assert _settled(daraja, slow.json()["CheckoutRequestID"])["ResultCode"] == "0"
    assert daraja.received(STK) == []  # the query knows before the callback arrives
    assert daraja.wait_for(STK)[0].at - started >= 0.55

    daraja.faults({"mode": "duplicate_result", "api": "express"})
    _, twice = daraja.stk_push()
    copies = [r for r in daraja.wait_for(STK, count=3)
              if r.body["Body"]["stkCallback"]["CheckoutRequestID"] == twice.json()["CheckoutRequestID"]]
    assert len(copies) == 2 and copies[0].body == copies[1].body
    assert len(daraja.http.get("/sim/c2b").json()["payments"]) == 2  # paid once each


def test_gateway_and_response_faults(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_5xx", "api": "express", "status_code": 503})
    body, refused = daraja.stk_push()
    assert (refused.status_code, refused.json()["errorCode"]) == (503, "500.003.1001")
    assert daraja.http.get("/sim/stk").json()["requests"] == []

    daraja.faults({"mode": "http_timeout_after_accept", "api": "express", "hang_s": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        daraja.post("/mpesa/stkpush/v1/processrequest", body, timeout=0.3)
    checkout_id = daraja.wait_for(STK)[0].body["Body"]["stkCallback"]["CheckoutRequestID"]
    assert _settled(daraja, checkout_id)["ResultCode"] == "0"

    daraja.faults({"mode": "spike_arrest", "api": "express_query"})
    assert daraja.stk_query(checkout_id).json()["errorCode"] == "500.003.02"
    assert daraja.stk_query(checkout_id).status_code == 200


def test_result_before_response(daraja: Daraja) -> None:
    daraja.faults({"mode": "result_before_response", "api": "express"})
    _, response = daraja.stk_push()
    answered_at = time.monotonic()
    received = daraja.received(STK)
    assert len(received) == 1 and received[0].at < answered_at
    assert received[0].body["Body"]["stkCallback"]["CheckoutRequestID"] == response.json()["CheckoutRequestID"]


def test_express_fault_specs_and_mix(make_daraja, daraja: Daraja) -> None:
    refused = daraja.http.post("/sim/faults", json={"mode": "queue_timeout", "api": "express"})
    assert refused.status_code == 400  # STK has no QueueTimeOutURL
    refused = daraja.http.post("/sim/faults", json={"mode": "drop_callback", "api": "express_query"})
    assert refused.status_code == 400  # the query is synchronous
    mixed = make_daraja(fault_mix={"result_failure:1037": 1.0}, fault_mix_apis=frozenset({"express"}),
                        fault_seed=3)
    _, response = mixed.stk_push()
    assert _callback(mixed, response.json()["CheckoutRequestID"])["ResultCode"] == 1037
    assert mixed.pay_b2c()[1].status_code == 200  # B2C is not in the mix's APIs


def test_checkout_request_ids_are_unique(daraja: Daraja) -> None:
    ids = {daraja.stk_push()[1].json()["CheckoutRequestID"] for _ in range(20)}
    assert len(ids) == 20


def test_reset_forgets_pushes(daraja: Daraja) -> None:
    _, response = daraja.stk_push()
    checkout_id = response.json()["CheckoutRequestID"]
    _settled(daraja, checkout_id)
    assert daraja.http.post("/sim/reset").json() == {"reset": True}
    assert daraja.http.get("/sim/stk").json()["requests"] == []
    daraja.forget_token()
    assert daraja.stk_query(checkout_id).json()["errorMessage"] == \
        "Bad Request - Invalid CheckoutRequestID"
