"""Each fault mode on its own, plus targeting, multi-shot, the random mix and spec errors."""

from __future__ import annotations

import time

import httpx
import pytest
from sim_harness import Daraja, load_sample, wait_until

RESULT = "b2c/result"
TIMEOUT = "b2c/timeout"


def test_http_timeout_after_accept_pays_and_then_refuses_the_same_id(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_timeout_after_accept", "hang_s": 1.5})
    body = daraja.b2c_body()
    with pytest.raises(httpx.ReadTimeout):
        daraja.post("/mpesa/b2c/v3/paymentrequest", body, timeout=0.3)
    # The client does not know, but the money has moved and the result is on its way.
    assert daraja.sim_payments()["counts"] == {body["OriginatorConversationID"]: 1}
    daraja.wait_for(RESULT)
    retry = daraja.post("/mpesa/b2c/v3/paymentrequest", body)
    assert retry.json()["errorCode"] == "500.002.1001"
    assert daraja.sim_payments()["count"] == 1


def test_http_timeout_can_drop_the_connection(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_timeout_after_accept", "close_connection": True})
    body = daraja.b2c_body()
    with pytest.raises(httpx.RemoteProtocolError):
        daraja.post("/mpesa/b2c/v3/paymentrequest", body)
    assert daraja.sim_payments()["counts"] == {body["OriginatorConversationID"]: 1}


def test_http_timeout_with_drop_callback_leaves_only_transaction_status(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_timeout_after_accept", "hang_s": 1.0},
                  {"mode": "drop_callback"})
    body = daraja.b2c_body()
    with pytest.raises(httpx.ReadTimeout):
        daraja.post("/mpesa/b2c/v3/paymentrequest", body, timeout=0.3)
    wait_until(lambda: daraja.http.get("/sim/callbacks", params={"kind": "b2c_result"}).json()["callbacks"])
    assert daraja.received(RESULT) == []
    daraja.transaction_status(OriginalConversationID=body["OriginatorConversationID"])
    status = daraja.wait_for("status/result")[0].body
    params = {p["Key"]: p["Value"] for p in status["Result"]["ResultParameters"]["ResultParameter"]}
    assert params["TransactionStatus"] == "Completed"


def test_http_5xx_pays_nothing_and_the_same_id_can_be_retried(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_5xx", "status_code": 503})
    body, response = daraja.pay_b2c()
    assert response.status_code == 503
    assert response.json()["errorCode"] == "500.003.1001"
    assert daraja.sim_payments()["count"] == 0
    assert daraja.post("/mpesa/b2c/v3/paymentrequest", body).status_code == 200
    assert daraja.sim_payments()["counts"] == {body["OriginatorConversationID"]: 1}


def test_spike_arrest_records_nothing(daraja: Daraja) -> None:
    daraja.faults({"mode": "spike_arrest"})
    body, response = daraja.pay_b2c()
    assert response.status_code == 500
    assert response.json()["errorCode"] == "500.003.02"
    assert daraja.http.get("/sim/b2c").json()["requests"] == []
    assert daraja.post("/mpesa/b2c/v3/paymentrequest", body).status_code == 200


def test_result_failure_sends_the_code_and_pays_nothing(daraja: Daraja) -> None:
    daraja.faults({"mode": "result_failure", "result_code": 2040})
    _, response = daraja.pay_b2c()
    assert response.status_code == 200
    result = daraja.wait_for(RESULT)[0].body["Result"]
    assert result["ResultCode"] == 2040
    assert "ResultParameters" not in result
    assert daraja.sim_payments()["count"] == 0


def test_result_failure_string_code(daraja: Daraja) -> None:
    daraja.faults({"mode": "result_failure", "result_code": "SFC_IC0003"})
    daraja.pay_b2c()
    assert daraja.wait_for(RESULT)[0].body["Result"]["ResultCode"] == "SFC_IC0003"


def test_queue_timeout_then_the_real_result(daraja: Daraja) -> None:
    daraja.faults({"mode": "queue_timeout"})
    body, _ = daraja.pay_b2c()
    notice = daraja.wait_for(TIMEOUT)[0]
    result = daraja.wait_for(RESULT)[0]
    assert notice.at < result.at
    sample = load_sample("b2c_queue_timeout.json")
    assert set(notice.body["Result"]) == set(sample["Result"])
    assert notice.body["Result"]["ResultCode"] == 1
    assert notice.body["Result"]["OriginatorConversationID"] == body["OriginatorConversationID"]
    assert result.body["Result"]["ResultCode"] == 0
    assert daraja.sim_payments()["count"] == 1


def test_duplicate_result_is_sent_twice_but_paid_once(daraja: Daraja) -> None:
    daraja.faults({"mode": "duplicate_result"})
    body, _ = daraja.pay_b2c()
    first, second = daraja.wait_for(RESULT, count=2)
    assert first.body == second.body
    assert daraja.sim_payments()["counts"] == {body["OriginatorConversationID"]: 1}


def test_duplicate_result_many_concurrent_copies(daraja: Daraja) -> None:
    daraja.faults({"mode": "duplicate_result", "copies": 10, "concurrent": True})
    daraja.pay_b2c()
    assert len(daraja.wait_for(RESULT, count=10)) == 10


def test_result_before_response(daraja: Daraja) -> None:
    daraja.faults({"mode": "result_before_response"})
    body, response = daraja.pay_b2c()
    answered_at = time.monotonic()
    assert response.status_code == 200
    received = daraja.received(RESULT)
    assert len(received) == 1 and received[0].at < answered_at
    assert received[0].body["Result"]["OriginatorConversationID"] == body["OriginatorConversationID"]


def test_drop_callback_pays_but_never_tells(daraja: Daraja) -> None:
    daraja.faults({"mode": "drop_callback"})
    body, _ = daraja.pay_b2c()
    dropped = wait_until(lambda: daraja.http.get("/sim/callbacks").json()["callbacks"])
    # The record is written in place of the send: once it says dropped, nothing was or will be sent.
    assert dropped[0]["dropped"] is True and dropped[0]["status_code"] is None
    assert daraja.received(RESULT) == []
    assert daraja.sim_payments()["counts"] == {body["OriginatorConversationID"]: 1}


def test_slow_callback(daraja: Daraja) -> None:
    daraja.faults({"mode": "slow_callback", "delay_ms": 600})
    started = time.monotonic()
    daraja.pay_b2c()
    arrived = daraja.wait_for(RESULT)[0]
    assert arrived.at - started >= 0.55


def test_targeted_fault_hits_only_its_originator_id(daraja: Daraja) -> None:
    target = daraja.b2c_body()
    daraja.faults({"mode": "result_failure", "result_code": 1,
                   "match": {"OriginatorConversationID": target["OriginatorConversationID"]}})
    other, _ = daraja.pay_b2c()
    daraja.post("/mpesa/b2c/v3/paymentrequest", target)
    results = {r.body["Result"]["OriginatorConversationID"]: r.body["Result"]["ResultCode"]
               for r in daraja.wait_for(RESULT, count=2)}
    assert results == {other["OriginatorConversationID"]: 0, target["OriginatorConversationID"]: 1}
    assert daraja.http.get("/sim/faults").json()["faults"] == []


def test_fault_times_and_clearing(daraja: Daraja) -> None:
    daraja.faults({"mode": "http_5xx", "times": 2})
    assert [daraja.pay_b2c()[1].status_code for _ in range(3)] == [500, 500, 200]
    daraja.faults({"mode": "http_5xx"}, {"mode": "drop_callback"})
    assert daraja.http.delete("/sim/faults").json() == {"cleared": 2}
    assert daraja.pay_b2c()[1].status_code == 200


def test_faults_on_other_apis(daraja: Daraja) -> None:
    daraja.faults({"mode": "spike_arrest", "api": "oauth"})
    assert daraja.fetch_token().json()["errorCode"] == "500.003.02"
    daraja.register_urls()
    daraja.faults({"mode": "drop_callback", "api": "c2b"})
    assert daraja.simulate_c2b().status_code == 200
    wait_until(lambda: daraja.http.get("/sim/callbacks",
                                       params={"kind": "c2b_confirmation"}).json()["callbacks"])
    assert daraja.received("c2b/confirm") == []
    assert daraja.http.get("/sim/c2b").json()["payments"][0]["status"] == "completed"


@pytest.mark.parametrize("spec", [
    {"mode": "nope"},
    {"mode": "drop_callback", "result_code": 1},
    {"mode": "queue_timeout", "api": "c2b"},
    {"mode": "result_failure", "result_code": 0},
    {"mode": "duplicate_result", "copies": 1},
    {"mode": "http_5xx", "api": "stk"},
])
def test_bad_fault_specs_are_refused(daraja: Daraja, spec: dict) -> None:
    response = daraja.http.post("/sim/faults", json=spec)
    assert response.status_code == 400 and response.json()["error"]


def test_random_fault_mix(make_daraja) -> None:
    daraja = make_daraja(fault_mix={"http_5xx": 1.0}, fault_seed=7)
    assert {daraja.pay_b2c()[1].status_code for _ in range(3)} == {500}
    with pytest.raises(ValueError):
        make_daraja(fault_mix={"http_5xx": 0.7, "spike_arrest": 0.7})
