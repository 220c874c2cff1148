"""B2C payment requests: shapes, validation, duplicate refusal and the record of payments."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sim_harness import Daraja, load_sample, wait_until


def _parameters(result: dict[str, Any]) -> dict[str, Any]:
    return {p["Key"]: p.get("Value") for p in result["Result"]["ResultParameters"]["ResultParameter"]}


def _result_for(daraja: Daraja, originator_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for received in daraja.received("b2c/result"):
            if received.body["Result"]["OriginatorConversationID"] == originator_id:
                return received.body
        return None

    return wait_until(find)


def test_accepted_response_and_success_result_match_the_samples(daraja: Daraja) -> None:
    body, response = daraja.pay_b2c(Amount="100")
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == set(load_sample("b2c_response_accepted.json"))
    assert answer["OriginatorConversationID"] == body["OriginatorConversationID"]
    assert answer["ResponseCode"] == "0"
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", answer["ConversationID"])

    result = _result_for(daraja, body["OriginatorConversationID"])
    sample = load_sample("b2c_result_success.json")
    assert set(result["Result"]) == set(sample["Result"])
    assert set(_parameters(result)) == set(_parameters(sample))
    assert result["Result"]["ReferenceData"] == sample["Result"]["ReferenceData"]
    assert result["Result"]["ResultCode"] == 0 and result["Result"]["ResultType"] == 0
    assert result["Result"]["ConversationID"] == answer["ConversationID"]
    params = _parameters(result)
    assert params["TransactionAmount"] == 100
    assert params["TransactionReceipt"] == result["Result"]["TransactionID"]
    assert re.fullmatch(r"[A-Z0-9]{10}", params["TransactionReceipt"])
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", params["TransactionCompletedDateTime"])
    assert params["ReceiverPartyPublicName"].startswith("254705912645 - ")
    for key in ("B2CUtilityAccountAvailableFunds", "B2CWorkingAccountAvailableFunds",
                "B2CChargesPaidAccountAvailableFunds"):
        assert isinstance(params[key], (int, float))
    assert params["B2CChargesPaidAccountAvailableFunds"] < 0

    record = daraja.sim_payments()
    assert record["count"] == 1
    assert record["payments"][0]["receipt"] == params["TransactionReceipt"]
    assert record["payments"][0]["amount"] == 100


def test_receipts_are_unique(daraja: Daraja) -> None:
    for _ in range(5):
        daraja.pay_b2c()
    wait_until(lambda: len(daraja.received("b2c/result")) == 5)
    receipts = [p["receipt"] for p in daraja.sim_payments()["payments"]]
    assert len(set(receipts)) == 5


def test_duplicate_originator_conversation_id_is_refused(daraja: Daraja) -> None:
    body, first = daraja.pay_b2c()
    assert first.status_code == 200
    again = daraja.post("/mpesa/b2c/v3/paymentrequest", body)
    assert again.status_code == 500
    assert again.json()["errorCode"] == "500.002.1001"
    assert again.json()["errorMessage"] == "Duplicate OriginatorConversationID."
    assert set(again.json()) == set(load_sample("b2c_response_duplicate_error.json"))
    payments = daraja.sim_payments()
    assert payments["counts"] == {body["OriginatorConversationID"]: 1}
    assert payments["duplicate_attempts"] == {body["OriginatorConversationID"]: 1}


def test_without_duplicate_detection_a_repeat_pays_twice(make_daraja) -> None:
    daraja = make_daraja(detect_duplicate_originator_ids=False)
    body, _ = daraja.pay_b2c()
    assert daraja.post("/mpesa/b2c/v3/paymentrequest", body).status_code == 200
    assert daraja.sim_payments()["counts"] == {body["OriginatorConversationID"]: 2}


def test_bad_security_credential_gives_2001_and_pays_nothing(daraja: Daraja) -> None:
    body, response = daraja.pay_b2c(SecurityCredential=daraja.credential("not-the-password"))
    assert response.status_code == 200  # accepted; refused in the result, as on M-Pesa
    result = _result_for(daraja, body["OriginatorConversationID"])
    sample = load_sample("b2c_result_failure.json")
    assert set(result["Result"]) == set(sample["Result"])
    assert result["Result"]["ResultCode"] == 2001
    assert result["Result"]["ResultDesc"] == "The initiator information is invalid."
    garbage, _ = daraja.pay_b2c(SecurityCredential="bm90IGEgY2lwaGVydGV4dA==")
    assert _result_for(daraja, garbage["OriginatorConversationID"])["Result"]["ResultCode"] == 2001
    assert daraja.sim_payments()["count"] == 0


@pytest.mark.parametrize(("amount", "code"), [("5", 2), ("250001", 3)])
def test_amount_limits_fail_in_the_result(daraja: Daraja, amount: str, code: int) -> None:
    body, response = daraja.pay_b2c(Amount=amount)
    assert response.status_code == 200
    assert _result_for(daraja, body["OriginatorConversationID"])["Result"]["ResultCode"] == code
    assert daraja.sim_payments()["count"] == 0


@pytest.mark.parametrize(("field", "value"), [
    ("Amount", "10.50"), ("Amount", "ten"), ("PartyB", "0705912645"), ("PartyB", "254805912645"),
    ("CommandID", "CustomerPayBillOnline"), ("Remarks", "x"), ("Remarks", "r" * 101),
    ("ResultURL", "not a url"), ("QueueTimeOutURL", None), ("InitiatorName", ""),
])
def test_malformed_requests_get_400_002_02(daraja: Daraja, field: str, value: Any) -> None:
    body = daraja.b2c_body()
    if value is None:
        del body[field]
    else:
        body[field] = value
    response = daraja.post("/mpesa/b2c/v3/paymentrequest", body)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.002.02"
    assert field in response.json()["errorMessage"]
    # Nothing was recorded: the same ID is still usable once the request is fixed.
    assert daraja.post("/mpesa/b2c/v3/paymentrequest",
                       daraja.b2c_body(OriginatorConversationID=body["OriginatorConversationID"])
                       ).status_code == 200


def test_v1_generates_the_originator_conversation_id(daraja: Daraja) -> None:
    body = daraja.b2c_body()
    del body["OriginatorConversationID"]
    response = daraja.post("/mpesa/b2c/v1/paymentrequest", body)
    assert response.status_code == 200
    generated = response.json()["OriginatorConversationID"]
    assert re.fullmatch(r"\d{5}-\d{8}-1", generated)
    assert _result_for(daraja, generated)["Result"]["ResultCode"] == 0


def test_unregistered_recipient_and_insufficient_balance(make_daraja) -> None:
    daraja = make_daraja(unregistered_msisdns=frozenset({"254700000001"}),
                         utility_opening_balance="150.00")
    unregistered, _ = daraja.pay_b2c(PartyB="254700000001")
    assert _result_for(daraja, unregistered["OriginatorConversationID"])["Result"]["ResultCode"] == 2040
    paid, _ = daraja.pay_b2c(Amount="100")
    assert _result_for(daraja, paid["OriginatorConversationID"])["Result"]["ResultCode"] == 0
    broke, _ = daraja.pay_b2c(Amount="100")
    assert _result_for(daraja, broke["OriginatorConversationID"])["Result"]["ResultCode"] == 1
    assert daraja.sim_payments()["count"] == 1


def test_sim_payments_counts_per_originator_id(daraja: Daraja) -> None:
    ids = [daraja.pay_b2c(Amount=str(100 + n))[0]["OriginatorConversationID"] for n in range(3)]
    record = daraja.sim_payments()
    assert record["counts"] == {i: 1 for i in ids}
    assert record["total_amount"] == 100 + 101 + 102
    one = daraja.http.get("/sim/payments", params={"originator_conversation_id": ids[1]}).json()
    assert [p["amount"] for p in one["payments"]] == [101]
    for payment in record["payments"]:
        assert set(payment) >= {"originator_conversation_id", "receipt", "amount", "party_b", "made_at"}
    requests = daraja.http.get("/sim/b2c").json()["requests"]
    assert [r["status"] for r in requests] == ["completed"] * 3
