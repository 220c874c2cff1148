"""The simulator as Africa's Talking's SMS API: the request and answer shapes of its documentation
and its official SDK (africastalking-python ``SMS.send``: a form with ``username``, ``to``,
``message``, ``bulkSMSMode`` and ``from``, the key in an ``apiKey`` header), its record, its faults."""

from __future__ import annotations

from sim_harness import Daraja

SDK_HEADERS = {"Accept": "application/json", "User-Agent": "africastalking-python/2.0.0", "apiKey": "sim-at-api-key"}


def send(daraja: Daraja, to: str, message: str = "Habari", **form: str):  # type: ignore[no-untyped-def]
    return daraja.http.post("/version1/messaging", headers=SDK_HEADERS,
                            data={"username": "sandbox", "to": to, "message": message, "bulkSMSMode": "1", **form})


def test_an_sms_is_answered_as_africas_talking_answers_and_recorded(daraja: Daraja) -> None:
    answer = send(daraja, "+254711000001,+254711000002", "Your payout is paid", **{"from": "FLEETPAY"})
    assert answer.status_code == 201
    data = answer.json()["SMSMessageData"]
    assert data["Message"] == "Sent to 2/2 Total Cost: KES 1.6000"
    first, second = data["Recipients"]
    assert first["statusCode"] == 101 and first["status"] == "Success" and first["cost"] == "KES 0.8000"
    assert first["number"] == "+254711000001" and first["messageId"].startswith("ATXid_")
    assert first["messageId"] != second["messageId"]
    record = daraja.http.get("/sim/sms", params={"to": "+254711000002"}).json()
    assert record["count"] == 1
    assert {k: record["messages"][0][k] for k in ("to", "message", "from", "status_code", "segments")} == {
        "to": "+254711000002", "message": "Your payout is paid", "from": "FLEETPAY", "status_code": 101, "segments": 1}


def test_segments_are_what_the_network_charges(daraja: Daraja) -> None:
    send(daraja, "+254711000003", "a" * 161)
    send(daraja, "+254711000004", "Habari yako 😀")
    assert [m["segments"] for m in daraja.http.get("/sim/sms").json()["messages"]] == [2, 1]


def test_a_wrong_key_or_username_is_refused_and_a_missing_field_named(daraja: Daraja) -> None:
    wrong = daraja.http.post("/version1/messaging", headers={**SDK_HEADERS, "apiKey": "nope"},
                             data={"username": "sandbox", "to": "+254711000001", "message": "x"})
    assert (wrong.status_code, wrong.text) == (401, "The supplied authentication is invalid")
    assert send(daraja, "+254711000001", username="someone").status_code == 401
    missing = daraja.http.post("/version1/messaging", headers=SDK_HEADERS, data={"username": "sandbox", "to": "+2547"})
    assert (missing.status_code, missing.text) == (400, "Request is missing required form field 'message'")
    assert daraja.http.get("/sim/sms").json()["count"] == 0


def test_an_invalid_number_gets_its_status_code(daraja: Daraja) -> None:
    (recipient,) = send(daraja, "0711000001").json()["SMSMessageData"]["Recipients"]
    assert (recipient["statusCode"], recipient["status"], recipient["messageId"]) == (403, "InvalidPhoneNumber", "None")


def test_faults_http_errors_lost_answers_and_per_number_failures(daraja: Daraja) -> None:
    daraja.http.post("/sim/faults", json=[
        {"mode": "http_5xx", "api": "sms"},
        {"mode": "recipient_failure", "api": "sms", "status_code": 406, "match": {"to": "+254711000009"}},
        {"mode": "http_timeout_after_accept", "api": "sms", "close_connection": True, "match": {"to": "+254711000010"}},
    ]).raise_for_status()
    assert send(daraja, "+254711000008").status_code == 500  # nothing recorded: not sent
    assert send(daraja, "+254711000008").status_code == 201
    failed = send(daraja, "+254711000008,+254711000009").json()["SMSMessageData"]
    assert [r["statusCode"] for r in failed["Recipients"]] == [101, 406]
    assert failed["Message"] == "Sent to 1/2 Total Cost: KES 0.8000"
    try:
        send(daraja, "+254711000010")
        raise AssertionError("the connection should have been dropped")
    except Exception as error:  # noqa: BLE001 — the answer is lost, the message was sent
        assert "RemoteProtocolError" in type(error).__name__ or "ReadError" in type(error).__name__
    sent = daraja.http.get("/sim/sms").json()["messages"]
    assert [(m["to"], m["status_code"]) for m in sent] == [
        ("+254711000008", 101), ("+254711000008", 101), ("+254711000009", 406), ("+254711000010", 101)]
