"""Transaction Status, Account Balance and Pull Transactions, answered from the simulator's record."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sim_harness import Daraja, load_sample

STATUS = "status/result"
EAT = timezone(timedelta(hours=3))


def _params(result: dict[str, Any]) -> dict[str, Any]:
    return {p["Key"]: p.get("Value") for p in result["Result"]["ResultParameters"]["ResultParameter"]}


def _status(daraja: Daraja, **ids: str) -> dict[str, Any]:
    before = len(daraja.received(STATUS))
    response = daraja.transaction_status(**ids)
    assert response.status_code == 200, response.text
    assert response.json()["ResponseCode"] == "0"
    return daraja.wait_for(STATUS, count=before + 1)[before].body


def _paid(daraja: Daraja, **overrides: Any) -> tuple[dict[str, Any], str]:
    body, _ = daraja.pay_b2c(**overrides)
    payment = daraja.sim_payments()["payments"][-1]
    assert payment["originator_conversation_id"] == body["OriginatorConversationID"]
    return body, payment["receipt"]


# --- Transaction Status -----------------------------------------------------------------------
def test_status_of_a_paid_payout_by_receipt_and_by_originator_id(daraja: Daraja) -> None:
    body, receipt = _paid(daraja, Amount="100")
    by_receipt = _status(daraja, TransactionID=receipt)
    sample = load_sample("transaction_status_result.json")
    assert set(by_receipt["Result"]) == set(sample["Result"])
    assert set(_params(by_receipt)) >= set(_params(sample))
    params = _params(by_receipt)
    assert params["TransactionStatus"] == "Completed"
    assert params["ReceiptNo"] == receipt
    assert params["Amount"] == "100"
    assert params["OriginatorConversationID"] == body["OriginatorConversationID"]
    assert re.fullmatch(r"20\d{12}", str(params["FinalisedTime"]))
    assert by_receipt["Result"]["ReferenceData"] == {"ReferenceItem": {"Key": "Occasion", "Value": "status"}}

    by_id = _status(daraja, OriginalConversationID=body["OriginatorConversationID"])
    assert _params(by_id)["ReceiptNo"] == receipt


def test_status_of_a_failed_payout(daraja: Daraja) -> None:
    daraja.faults({"mode": "result_failure", "result_code": 2040})
    body, _ = daraja.pay_b2c()
    result = _status(daraja, OriginalConversationID=body["OriginatorConversationID"])
    assert result["Result"]["ResultCode"] == 0
    params = _params(result)
    assert params["TransactionStatus"] == "Declined"
    assert "customer type" in params["TransactionReason"]


def test_status_of_an_unknown_transaction(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_5xx"})
    body, refused = daraja.pay_b2c()
    assert refused.status_code == 500
    result = _status(daraja, OriginalConversationID=body["OriginatorConversationID"])
    assert result["Result"]["ResultCode"] == "R000001"
    assert "ResultParameters" not in result["Result"]
    assert _status(daraja, TransactionID="SZZ0000000")["Result"]["ResultCode"] == "R000001"


def test_status_of_a_c2b_payment(daraja: Daraja) -> None:
    daraja.simulate_c2b(amount=300, TransID="SHK3QX7T2Q")
    params = _params(_status(daraja, TransactionID="SHK3QX7T2Q"))
    assert (params["TransactionStatus"], params["Amount"]) == ("Completed", "300")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_status_shows_the_full_msisdn_the_confirmation_hides(daraja: Daraja, version: str) -> None:
    daraja.register_urls(version=version)
    daraja.simulate_c2b(TransID="SHK3QX7T2R", version=version, FirstName="John", LastName="Doe")
    confirmation = daraja.wait_for("c2b/confirm")[0].body
    assert "254708374149" not in confirmation["MSISDN"]  # masked (v2) or hashed (v1)
    params = _params(_status(daraja, TransactionID="SHK3QX7T2R"))
    assert params["DebitPartyName"] == "254708374149 - JOHN DOE"


def test_status_of_a_payout_names_the_full_recipient_number(daraja: Daraja) -> None:
    _, receipt = _paid(daraja, PartyB="254705912645")
    params = _params(_status(daraja, TransactionID=receipt))
    assert re.fullmatch(r"254705912645 - [A-Z]+ [A-Z]+", params["CreditPartyName"])


def test_status_with_a_bad_credential_is_2001_and_a_missing_id_is_400(daraja: Daraja) -> None:
    body = daraja.org_query_body("TransactionStatusQuery", "status", TransactionID="SZZ0000000",
                                 SecurityCredential=daraja.credential("wrong"))
    assert daraja.post("/mpesa/transactionstatus/v1/query", body).status_code == 200
    assert daraja.wait_for(STATUS)[0].body["Result"]["ResultCode"] == 2001
    missing = daraja.post("/mpesa/transactionstatus/v1/query",
                          daraja.org_query_body("TransactionStatusQuery", "status"))
    assert missing.status_code == 400 and missing.json()["errorCode"] == "400.002.02"


def test_status_queue_timeout_fault(daraja: Daraja) -> None:
    _, receipt = _paid(daraja)
    daraja.faults({"mode": "queue_timeout", "api": "transaction_status"})
    daraja.transaction_status(TransactionID=receipt)
    notice = daraja.wait_for("status/timeout")[0].body
    assert notice["Result"]["ResultCode"] == 1
    assert _params(daraja.wait_for(STATUS)[0].body)["ReceiptNo"] == receipt


# --- Account Balance --------------------------------------------------------------------------
def test_account_balance_string(daraja: Daraja) -> None:
    daraja.simulate_c2b(amount=500)
    _paid(daraja, Amount="100")
    response = daraja.post("/mpesa/accountbalance/v1/query",
                           daraja.org_query_body("AccountBalance", "balance"))
    assert response.status_code == 200
    assert response.json().keys() == {"OriginatorConversationID", "ConversationID", "ResponseCode",
                                      "ResponseDescription"}
    result = daraja.wait_for("balance/result")[0].body
    params = _params(result)
    accounts = params["AccountBalance"].split("&")
    for account in accounts:
        assert re.fullmatch(r"[A-Za-z ]+\|KES\|-?\d+\.\d\d\|-?\d+\.\d\d\|\d+\.\d\d\|\d+\.\d\d", account)
    by_name = {a.split("|")[0]: a.split("|")[2] for a in accounts}
    assert by_name["Utility Account"] == "1000400.00"  # 1,000,000 + 500 - 100
    assert by_name["Charges Paid Account"] == "-15.00"
    assert re.fullmatch(r"20\d{12}", str(params["BOCompletedTime"]))


# --- Pull Transactions ------------------------------------------------------------------------
def _pull(daraja: Daraja, offset: int | str, start: datetime, end: datetime) -> dict[str, Any]:
    response = daraja.post("/pulltransactions/v1/query", {
        "ShortCode": daraja.config.short_code, "StartDate": f"{start:%Y-%m-%d %H:%M:%S}",
        "EndDate": f"{end:%Y-%m-%d %H:%M:%S}", "OffSetValue": str(offset)})
    assert response.status_code == 200, response.text
    return response.json()


def test_pull_register_once(daraja: Daraja) -> None:
    body = {"ShortCode": daraja.config.short_code, "RequestType": "Pull",
            "NominatedNumber": "254708374149", "CallBackURL": daraja.cb("pull")}
    first = daraja.post("/pulltransactions/v1/register", body).json()
    assert first["ResponseStatus"] == "1000"
    assert daraja.post("/pulltransactions/v1/register", body).json()["ResponseStatus"] == "1001"


def test_pull_pages_by_row_offset_within_48_hours(make_daraja) -> None:
    daraja = make_daraja(pull_page_size=2)
    now = datetime.now(EAT)
    old = (now - timedelta(hours=49)).strftime("%Y%m%d%H%M%S")
    daraja.simulate_c2b(amount=999, TransTime=old)  # outside the window: never listed
    sent = [daraja.simulate_c2b(amount=100 + n, bill_ref=f"B{n}") for n in range(5)]
    assert all(r.status_code == 200 for r in sent)
    start, end = now - timedelta(days=3), now + timedelta(minutes=1)

    pages = [_pull(daraja, offset, start, end) for offset in (0, 2, 4, 6)]
    assert [p["ResponseCode"] for p in pages] == ["1000", "1000", "1000", "1001"]
    assert pages[3]["Response"] == [[]]
    rows = [row for page in pages[:3] for row in page["Response"][0]]
    assert [row["amount"] for row in rows] == ["100.00", "101.00", "102.00", "103.00", "104.00"]
    assert len({row["transactionId"] for row in rows}) == 5
    for row in rows:
        assert set(row) >= {"transactionId", "trxDate", "msisdn", "transactiontype",
                            "billreference", "amount"}
        assert row["transactiontype"] == "c2b-pay-bill-debit"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["trxDate"])


@pytest.mark.parametrize(("field", "value"), [("StartDate", "yesterday"), ("OffSetValue", "-1")])
def test_pull_bad_query(daraja: Daraja, field: str, value: str) -> None:
    body = {"ShortCode": daraja.config.short_code, "StartDate": "2024-08-04 08:36:00",
            "EndDate": "2024-08-05 08:36:00", "OffSetValue": "0", field: value}
    response = daraja.post("/pulltransactions/v1/query", body)
    assert response.status_code == 400 and field in response.json()["errorMessage"]
