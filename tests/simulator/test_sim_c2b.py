"""C2B: RegisterURL rules, simulate, validation and the confirmation's exact shape."""

from __future__ import annotations

import hashlib
import re

import pytest
from sim_harness import Daraja, Reply, load_sample, wait_until

from simulator import SimulatorConfig

CONFIRM = "c2b/confirm"
VALIDATE = "c2b/validate"


def _c2b_status(daraja: Daraja) -> list[str]:
    return [p["status"] for p in daraja.http.get("/sim/c2b").json()["payments"]]


def test_register_url_success_shape(daraja: Daraja) -> None:
    response = daraja.register_urls()
    assert response.status_code == 200
    assert response.json().keys() == {"OriginatorCoversationID", "ResponseCode", "ResponseDescription"}
    assert response.json()["ResponseCode"] == "0"


@pytest.mark.parametrize("word", ["mpesa", "M-PESA", "Safaricom", "exec", "exe", "cmd", "SQL", "query"])
def test_register_url_rejects_filtered_words(daraja: Daraja, word: str) -> None:
    response = daraja.post("/mpesa/c2b/v2/registerurl", {
        "ShortCode": daraja.config.short_code, "ResponseType": "Completed",
        "ConfirmationURL": f"{daraja.receiver.url}/cb/{word}/confirm",
        "ValidationURL": daraja.cb("c2b/validate"),
    })
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.002.02"
    assert "ConfirmationURL" in response.json()["errorMessage"]


@pytest.mark.parametrize("response_type", ["completed", "Cancel", "", "COMPLETED"])
def test_register_url_response_type_must_be_exact(daraja: Daraja, response_type: str) -> None:
    response = daraja.register_urls(response_type=response_type)
    assert response.status_code == 400
    assert "ResponseType" in response.json()["errorMessage"]


def test_simulate_posts_a_confirmation_shaped_like_the_sample(daraja: Daraja) -> None:
    daraja.register_urls()
    response = daraja.simulate_c2b(amount=200, bill_ref="025")
    assert response.status_code == 200
    assert response.json()["ResponseCode"] == "0"
    assert "OriginatorCoversationID" in response.json()
    confirmation = daraja.wait_for(CONFIRM)[0].body
    sample = load_sample("c2b_confirmation.json")
    assert list(confirmation) == list(sample)
    assert re.fullmatch(r"[A-Z0-9]{10}", confirmation["TransID"])
    assert re.fullmatch(r"20\d{12}", confirmation["TransTime"])
    assert confirmation["TransAmount"] == "200.00"
    assert confirmation["BusinessShortCode"] == "4165253"
    assert confirmation["BillRefNumber"] == "025"
    assert confirmation["TransactionType"] == "Pay Bill"
    assert confirmation["MSISDN"] == "2547 ***** 149"
    assert confirmation["OrgAccountBalance"] == "1000200.00"
    assert daraja.received(VALIDATE) == []  # validation is off by default

    daraja.simulate_c2b(amount=50)
    second = daraja.wait_for(CONFIRM, count=2)[1].body
    assert second["OrgAccountBalance"] == "1000250.00"  # running balance
    assert second["TransID"] != confirmation["TransID"]


def test_v1_registration_sends_hashed_msisdn(daraja: Daraja) -> None:
    daraja.register_urls(version="v1")
    daraja.simulate_c2b(version="v1")
    confirmation = daraja.wait_for(CONFIRM)[0].body
    assert confirmation["MSISDN"] == hashlib.sha256(b"254708374149").hexdigest()


def test_trans_id_and_time_overrides(daraja: Daraja) -> None:
    daraja.register_urls()
    assert daraja.simulate_c2b(TransID="SHK3QX7T2M", TransTime="20240815143012").status_code == 200
    confirmation = daraja.wait_for(CONFIRM)[0].body
    assert (confirmation["TransID"], confirmation["TransTime"]) == ("SHK3QX7T2M", "20240815143012")
    again = daraja.simulate_c2b(TransID="SHK3QX7T2M")
    assert again.status_code == 400 and "TransID" in again.json()["errorMessage"]
    assert daraja.simulate_c2b(TransID="lower12345").status_code == 400


def test_simulate_without_registration_completes_silently(daraja: Daraja) -> None:
    assert daraja.simulate_c2b().status_code == 200
    assert _c2b_status(daraja) == ["completed"]
    assert daraja.http.get("/sim/callbacks").json()["callbacks"] == []


@pytest.mark.parametrize(("field", "value"), [
    ("Amount", 0), ("Amount", "12.5"), ("Msisdn", "0708374149"), ("ShortCode", "600000"),
    ("CommandID", "BusinessPayment"), ("BillRefNumber", ""),
])
def test_simulate_validates_fields(daraja: Daraja, field: str, value: object) -> None:
    body = {"ShortCode": daraja.config.short_code, "CommandID": "CustomerPayBillOnline",
            "Amount": 100, "Msisdn": "254708374149", "BillRefNumber": "025", field: value}
    response = daraja.post("/mpesa/c2b/v2/simulate", body)
    assert response.status_code == 400 and field in response.json()["errorMessage"]


def test_validation_accepts_and_third_party_id_is_echoed(make_daraja) -> None:
    daraja = make_daraja(c2b_validation_enabled=True)
    daraja.reply(VALIDATE, Reply(body={"ResultCode": "0", "ResultDesc": "Accepted",
                                                "ThirdPartyTransID": "ref-77"}))
    daraja.register_urls()
    daraja.simulate_c2b(amount=150, bill_ref="114")
    validation = daraja.wait_for(VALIDATE)[0].body
    assert list(validation) == list(load_sample("c2b_validation.json"))
    assert validation["OrgAccountBalance"] == ""
    confirmation = daraja.wait_for(CONFIRM)[0].body
    assert confirmation["TransID"] == validation["TransID"]
    assert confirmation["ThirdPartyTransID"] == "ref-77"
    assert _c2b_status(daraja) == ["completed"]


def test_validation_rejection_cancels_the_payment(make_daraja) -> None:
    daraja = make_daraja(c2b_validation_enabled=True)
    daraja.reply(VALIDATE, Reply(body={"ResultCode": "C2B00012", "ResultDesc": "Rejected"}))
    daraja.register_urls()
    daraja.simulate_c2b()
    daraja.wait_for(VALIDATE)
    assert wait_until(lambda: _c2b_status(daraja) == ["cancelled"])
    assert daraja.received(CONFIRM) == []


@pytest.mark.parametrize(("response_type", "expected"), [("Completed", "completed"),
                                                          ("Cancelled", "cancelled")])
def test_validation_timeout_applies_the_response_type(make_daraja, response_type: str,
                                                      expected: str) -> None:
    daraja = make_daraja(c2b_validation_enabled=True, validation_timeout_s=0.2)
    daraja.reply(VALIDATE, Reply(delay_s=0.5))
    daraja.register_urls(response_type=response_type)
    daraja.simulate_c2b()
    assert wait_until(lambda: _c2b_status(daraja) == [expected])
    if expected == "completed":
        daraja.wait_for(CONFIRM)
    else:
        assert daraja.received(CONFIRM) == []


def test_validation_error_answer_applies_the_response_type(make_daraja) -> None:
    daraja = make_daraja(c2b_validation_enabled=True)
    daraja.reply(VALIDATE, Reply(status=500, body={"oops": True}))
    daraja.register_urls(response_type="Cancelled")
    daraja.simulate_c2b()
    assert wait_until(lambda: _c2b_status(daraja) == ["cancelled"])


def test_preregistered_urls_and_their_response_type(make_daraja, receiver) -> None:
    base = f"{receiver.url}/cb/prereg"
    daraja = make_daraja(c2b_confirmation_url=f"{base}/confirm",
                         c2b_validation_url=f"{base}/validate", c2b_validation_enabled=True,
                         response_type="Cancelled", validation_timeout_s=0.2)
    receiver.reply("/cb/prereg/validate", Reply(delay_s=0.5))  # too slow: Cancelled applies
    daraja.simulate_c2b()
    assert wait_until(lambda: _c2b_status(daraja) == ["cancelled"])
    assert daraja.http.post("/sim/reset").status_code == 200
    receiver.reply("/cb/prereg/validate", Reply())
    daraja.forget_token()
    daraja.simulate_c2b()
    receiver.wait_for("/cb/prereg/confirm")
    assert _c2b_status(daraja) == ["completed"]


def test_preregistered_urls_must_pass_the_url_rules() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(c2b_confirmation_url="http://127.0.0.1/mpesa/confirm")
