"""OAuth and the Bearer check every Daraja API makes."""

from __future__ import annotations

import httpx
from sim_harness import Daraja, load_sample


def _b2c(daraja: Daraja, token: str) -> httpx.Response:
    return daraja.post("/mpesa/b2c/v3/paymentrequest", daraja.b2c_body(), token=token)


def test_token_response_has_string_expires_in_like_production(daraja: Daraja) -> None:
    response = daraja.fetch_token()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(load_sample("oauth_token_response.json"))
    assert body["expires_in"] == "3599"
    assert len(body["access_token"]) == 28 and body["access_token"].isalnum()


def test_expires_in_can_be_a_number(make_daraja) -> None:
    daraja = make_daraja(expires_in_as_string=False, token_ttl_s=60)
    assert daraja.fetch_token().json()["expires_in"] == 60


def test_new_token_invalidates_the_previous_one(daraja: Daraja) -> None:
    first = daraja.fetch_token().json()["access_token"]
    assert _b2c(daraja, first).status_code == 200
    second = daraja.fetch_token().json()["access_token"]
    refused = _b2c(daraja, first)
    assert refused.status_code == 404
    assert refused.json()["errorCode"] == "404.001.03"
    assert set(refused.json()) == set(load_sample("b2c_response_invalid_token.json"))
    assert _b2c(daraja, second).status_code == 200


def test_tokens_can_coexist_when_single_active_token_is_off(make_daraja) -> None:
    daraja = make_daraja(single_active_token=False)
    first = daraja.fetch_token().json()["access_token"]
    daraja.fetch_token()
    assert _b2c(daraja, first).status_code == 200


def test_expired_token_is_refused(daraja: Daraja) -> None:
    token = daraja.token()
    assert daraja.http.post("/sim/tokens/expire").json()["expired"] == 1
    assert _b2c(daraja, token).json()["errorCode"] == "404.001.03"


def test_invalid_token_http_status_is_configurable(make_daraja) -> None:
    daraja = make_daraja(invalid_token_http_status=401)
    assert _b2c(daraja, "not-a-token").status_code == 401


def test_oauth_errors(daraja: Daraja) -> None:
    no_grant = daraja.http.get("/oauth/v1/generate", auth=("sim-consumer-key", "sim-consumer-secret"))
    assert (no_grant.status_code, no_grant.json()["errorCode"]) == (400, "400.008.02")
    no_basic = daraja.http.get("/oauth/v1/generate", params={"grant_type": "client_credentials"},
                               headers={"Authorization": "Bearer x"})
    assert (no_basic.status_code, no_basic.json()["errorCode"]) == (400, "400.008.01")
    wrong = daraja.fetch_token(secret="wrong-secret")
    assert wrong.status_code == 400
    assert set(wrong.json()) == {"requestId", "errorCode", "errorMessage"}


def test_missing_bearer_and_get_on_post_api(daraja: Daraja) -> None:
    no_header = daraja.http.post("/mpesa/b2c/v3/paymentrequest", json=daraja.b2c_body())
    assert no_header.json()["errorCode"] == "404.001.04"
    as_get = daraja.http.get("/mpesa/b2c/v3/paymentrequest",
                             headers={"Authorization": f"Bearer {daraja.token()}"})
    assert (as_get.status_code, as_get.json()["errorCode"]) == (404, "404.001.04")
